//! `{{ var }}` templating for prompts and assertion values. promptfoo uses
//! Nunjucks; minijinja reads the same syntax for what prompts use (variables,
//! filters, `if`/`for`). Unlike Nunjucks, a var the test does not define is an
//! error naming it, never an empty string.

use anyhow::{anyhow, bail, Result};
use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

/// A prompt's template(s).
#[derive(Debug, Clone, PartialEq)]
pub enum PromptBody {
    /// A template rendered to one string (which may itself be a JSON list of chat
    /// messages, as in promptfoo).
    Text(String),
    /// Chat messages whose contents are templates.
    Chat(Vec<(String, String)>),
}

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        // Nunjucks' `dump` is JSON.stringify.
        env.add_filter(
            "dump",
            |v: minijinja::Value| -> Result<String, minijinja::Error> {
                serde_json::to_string(&v).map_err(|e| {
                    minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
                })
            },
        );
        env
    })
}

fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

fn parse<'s>(template: &'s str) -> Result<minijinja::Template<'s, 's>> {
    env()
        .template_from_str(template)
        .map_err(|e| anyhow!("the template does not parse: {e}"))
}

/// The vars a parsed template uses that `vars` lacks, in name order.
fn missing_in(parsed: &minijinja::Template<'_, '_>, vars: &BTreeMap<String, Value>) -> Vec<String> {
    let used: BTreeSet<String> = parsed.undeclared_variables(false).into_iter().collect();
    used.into_iter()
        .filter(|name| !vars.contains_key(name) && !is_builtin(name))
        .collect()
}

/// The vars `template` uses that `vars` lacks, in name order.
pub fn missing_vars(template: &str, vars: &BTreeMap<String, Value>) -> Result<Vec<String>> {
    if !is_template(template) {
        return Ok(Vec::new());
    }
    Ok(missing_in(&parse(template)?, vars))
}

fn is_builtin(name: &str) -> bool {
    matches!(name, "range" | "dict" | "namespace" | "loop")
}

/// Renders `template` with `vars` (parsed once: the same parse names missing vars).
pub fn render(template: &str, vars: &BTreeMap<String, Value>) -> Result<String> {
    if !is_template(template) {
        return Ok(template.to_string());
    }
    let parsed = parse(template)?;
    let missing = missing_in(&parsed, vars);
    if !missing.is_empty() {
        bail!(
            "the template uses {} that the test does not define: {}",
            if missing.len() == 1 { "a var" } else { "vars" },
            missing.join(", ")
        );
    }
    parsed
        .render(vars)
        .map_err(|e| anyhow!("cannot render the template: {e}"))
}

/// Renders every string inside a JSON value (chat messages, rubric prompts),
/// leaving its structure as it is.
pub fn render_json(value: Value, vars: &BTreeMap<String, Value>) -> Result<Value> {
    Ok(match value {
        Value::String(s) => Value::String(render(&s, vars)?),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|i| render_json(i, vars))
                .collect::<Result<_>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| Ok((k, render_json(v, vars)?)))
                .collect::<Result<_>>()?,
        ),
        other => other,
    })
}

/// Checks that every template in a prompt parses and finds its vars.
pub fn check_prompt(body: &PromptBody, vars: &BTreeMap<String, Value>) -> Result<()> {
    let texts: Vec<&str> = match body {
        PromptBody::Text(t) => vec![t.as_str()],
        PromptBody::Chat(messages) => messages.iter().map(|(_, c)| c.as_str()).collect(),
    };
    let mut missing = BTreeSet::new();
    for t in texts {
        missing.extend(missing_vars(t, vars)?);
    }
    if !missing.is_empty() {
        bail!(
            "the prompt uses {} that the test does not define: {} (add {} to the test's vars or to defaultTest.vars)",
            if missing.len() == 1 { "a var" } else { "vars" },
            missing.iter().cloned().collect::<Vec<_>>().join(", "),
            if missing.len() == 1 { "it" } else { "them" }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn renders_vars_filters_and_loops() {
        let v = vars(&[
            ("name", Value::from("Ada")),
            ("items", serde_json::json!(["a", "b"])),
            ("obj", serde_json::json!({"k": 1})),
        ]);
        assert_eq!(
            render(
                "Hi {{ name | upper }}:{% for i in items %} {{i}}{% endfor %}\n",
                &v
            )
            .unwrap(),
            "Hi ADA: a b\n"
        );
        assert_eq!(render("{{ obj | dump }}", &v).unwrap(), r#"{"k":1}"#);
        assert_eq!(render("{{ obj.k }}", &v).unwrap(), "1");
    }

    #[test]
    fn missing_vars_are_named() {
        let v = vars(&[("a", Value::from(1))]);
        let err = render("{{a}} {{b}} {% if c %}{% endif %}", &v).unwrap_err();
        assert!(err.to_string().contains("b, c"), "{err}");
        // Loop variables are not vars the test must define.
        assert!(missing_vars("{% for x in [1] %}{{x}}{% endfor %}", &v)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn syntax_errors_say_so() {
        let err = render("{{ unclosed", &BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("does not parse"), "{err}");
    }
}
