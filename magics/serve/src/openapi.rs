//! `GET /openapi.json`: every route, with this server's models and limits filled
//! in, so that clients and fuzzers (schemathesis) see the real bounds.

use serde_json::{json, Value};

pub struct SpecInput<'a> {
    pub models: &'a [String],
    pub max_tokens: usize,
    pub vocab_size: usize,
    pub api_key: bool,
    pub version: &'a str,
}

pub fn spec(input: &SpecInput) -> Value {
    let errors = |codes: &[&str]| -> Value {
        let mut out = serde_json::Map::new();
        for code in codes {
            let description = match *code {
                "400" => "The request is malformed or asks for something this server does not do.",
                "401" => "The API key is missing or wrong.",
                "404" => "Unknown model, route or request id.",
                "429" => "The queue is full; retry later.",
                _ => "The engine failed.",
            };
            out.insert(
                code.to_string(),
                json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
            );
        }
        Value::Object(out)
    };
    let with = |ok: Value, codes: &[&str]| -> Value {
        let mut responses = errors(codes);
        responses["200"] = ok;
        responses
    };
    let json_ok = |schema: &str, description: &str| -> Value {
        json!({"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
    };
    let generation_ok = |schema: &str| -> Value {
        json!({
            "description": "The completion; with stream: true, server-sent events of chunks ending with `data: [DONE]`.",
            "content": {
                "application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}},
                "text/event-stream": {"schema": {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}}
            }
        })
    };
    let body = |schema: &str| -> Value {
        json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
    };
    let token =
        json!({"type": "integer", "minimum": 0, "maximum": input.vocab_size.saturating_sub(1)});
    let prompt = json!({"anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": 16},
        {"type": "array", "items": token, "minItems": 1},
        {"type": "array", "items": {"type": "array", "items": token, "minItems": 1}, "minItems": 1, "maxItems": 16}
    ]});
    let sampling = json!({
        "model": {"type": "string", "enum": input.models},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": input.max_tokens},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "exclusiveMinimum": true, "maximum": 1},
        "top_k": {"type": "integer", "minimum": 0, "description": "ferrolab's extension: sample among the k most likely tokens (0: all)."},
        "seed": {"type": "integer", "description": "Any integer; the same seed gives the same sample."},
        "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]},
        "stream": {"type": "boolean"},
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
        "n": {"type": "integer", "minimum": 1, "maximum": 8},
        "user": {"type": "string"}
    });
    // OpenAI's own spec: the optional sampling fields may be null (= the default).
    let mut sampling = sampling;
    if let Some(props) = sampling.as_object_mut() {
        for (name, schema) in props.iter_mut() {
            if name != "model" {
                schema["nullable"] = json!(true);
            }
        }
    }
    let mut completion_props = sampling.clone();
    completion_props["prompt"] = prompt.clone();
    let mut chat_props = sampling;
    chat_props["max_completion_tokens"] =
        json!({"type": "integer", "minimum": 1, "maximum": input.max_tokens});
    chat_props["messages"] = json!({"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/ChatMessage"}});
    let usage = json!({"type": "object", "required": ["prompt_tokens", "total_tokens"], "properties": {
        "prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}}});
    let finish = json!({"type": "string", "enum": ["stop", "length"]});
    let security = if input.api_key {
        json!([{"bearer": []}])
    } else {
        json!([])
    };
    let v1 = |op: Value| -> Value {
        let mut op = op;
        op["security"] = security.clone();
        op
    };
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "ferrolab serve",
            "version": input.version,
            "description": "An OpenAI-compatible API for ferrolab's model engine, with Prometheus metrics and human feedback."
        },
        "paths": {
            "/v1/models": {"get": v1(json!({"operationId": "listModels", "summary": "The base model and each adapter.",
                "responses": with(json_ok("ModelList", "The models."), &["401"])}))},
            "/v1/models/{model}": {"get": v1(json!({"operationId": "getModel", "summary": "One model.",
                "parameters": [{"name": "model", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": with(json_ok("Model", "The model."), &["401", "404"])}))},
            "/v1/completions": {"post": v1(json!({"operationId": "createCompletion", "summary": "Continue a prompt.",
                "requestBody": body("CompletionRequest"),
                "responses": with(generation_ok("Completion"), &["400", "401", "404", "429", "500"])}))},
            "/v1/chat/completions": {"post": v1(json!({"operationId": "createChatCompletion", "summary": "Answer a conversation (the model's chat template).",
                "requestBody": body("ChatRequest"),
                "responses": with(generation_ok("ChatCompletion"), &["400", "401", "404", "429", "500"])}))},
            "/v1/embeddings": {"post": v1(json!({"operationId": "createEmbedding", "summary": "Mean-pooled final hidden states.",
                "requestBody": body("EmbeddingRequest"),
                "responses": with(json_ok("EmbeddingList", "The embeddings."), &["400", "401", "404", "429", "500"])}))},
            "/v1/feedback": {"post": v1(json!({"operationId": "createFeedback", "summary": "Human feedback on a logged completion.",
                "requestBody": body("Feedback"),
                "responses": with(json_ok("FeedbackStored", "Stored on disk."), &["400", "401", "404", "500"])}))},
            "/health": {"get": {"operationId": "health", "summary": "Liveness and the served models.",
                "responses": {"200": {"description": "Serving.", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus metrics (text format 0.0.4).",
                "responses": {"200": {"description": "Metrics.", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document.",
                "responses": {"200": {"description": "The API.", "content": {"application/json": {"schema": {"type": "object"}}}}}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
                    "required": ["message", "type"], "properties": {
                        "message": {"type": "string"}, "type": {"type": "string"},
                        "param": {"type": "string", "nullable": true}, "code": {"type": "string", "nullable": true}}}}},
                "Model": {"type": "object", "required": ["id", "object", "created", "owned_by"], "properties": {
                    "id": {"type": "string"}, "object": {"type": "string", "enum": ["model"]},
                    "created": {"type": "integer"}, "owned_by": {"type": "string"},
                    "parent": {"type": "string", "nullable": true}, "context_length": {"type": "integer"}}},
                "ModelList": {"type": "object", "required": ["object", "data"], "properties": {
                    "object": {"type": "string", "enum": ["list"]}, "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}}}},
                "CompletionRequest": {"type": "object", "required": ["model", "prompt"], "properties": completion_props},
                "ChatMessage": {"type": "object", "required": ["role"], "properties": {
                    "role": {"type": "string", "enum": ["system", "developer", "user", "assistant"]},
                    "content": {"nullable": true, "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object", "required": ["type", "text"],
                        "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}}}}]}}},
                "ChatRequest": {"type": "object", "required": ["model", "messages"], "properties": chat_props},
                "Completion": {"type": "object", "required": ["id", "object", "created", "model", "choices", "usage"], "properties": {
                    "id": {"type": "string"}, "object": {"type": "string", "enum": ["text_completion"]},
                    "created": {"type": "integer"}, "model": {"type": "string"},
                    "choices": {"type": "array", "items": {"type": "object", "required": ["index", "text", "finish_reason"], "properties": {
                        "index": {"type": "integer"}, "text": {"type": "string"}, "finish_reason": finish}}},
                    "usage": usage}},
                "ChatCompletion": {"type": "object", "required": ["id", "object", "created", "model", "choices", "usage"], "properties": {
                    "id": {"type": "string"}, "object": {"type": "string", "enum": ["chat.completion"]},
                    "created": {"type": "integer"}, "model": {"type": "string"},
                    "choices": {"type": "array", "items": {"type": "object", "required": ["index", "message", "finish_reason"], "properties": {
                        "index": {"type": "integer"}, "finish_reason": finish,
                        "message": {"type": "object", "required": ["role", "content"], "properties": {
                            "role": {"type": "string", "enum": ["assistant"]}, "content": {"type": "string"}}}}}},
                    "usage": usage}},
                "EmbeddingRequest": {"type": "object", "required": ["model", "input"], "properties": {
                    "model": {"type": "string", "enum": input.models}, "input": prompt,
                    "encoding_format": {"type": "string", "enum": ["float", "base64", null], "nullable": true}}},
                "EmbeddingList": {"type": "object", "required": ["object", "data", "model", "usage"], "properties": {
                    "object": {"type": "string", "enum": ["list"]}, "model": {"type": "string"}, "usage": usage,
                    "data": {"type": "array", "items": {"type": "object", "required": ["object", "index", "embedding"], "properties": {
                        "object": {"type": "string", "enum": ["embedding"]}, "index": {"type": "integer"},
                        "embedding": {"anyOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}]}}}}}},
                "Feedback": {"type": "object", "required": ["id", "score"], "properties": {
                    "id": {"type": "string", "description": "The id of a completion this server returned."},
                    "score": {"type": "number"}, "label": {"type": "string"},
                    "comment": {"type": "string"}, "user": {"type": "string"}}},
                "FeedbackStored": {"type": "object", "required": ["object", "id", "feedback_id", "stored"], "properties": {
                    "object": {"type": "string", "enum": ["feedback"]}, "id": {"type": "string"},
                    "feedback_id": {"type": "integer"}, "score": {"type": "number"}, "stored": {"type": "boolean"}}}
            }
        }
    })
}
