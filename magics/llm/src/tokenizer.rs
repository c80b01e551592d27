//! Text to token ids and back, and the model's chat template.
//!
//! A GGUF file has no `tokenizer.json`: its vocabulary, merges and special tokens
//! are metadata. They are rebuilt into the same tokenizer transformers builds from
//! them (byte-level BPE with GPT-2's pre-tokenizer for `tokenizer.ggml.model = gpt2`),
//! so both tokenize every string the same way.

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file;
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use tokenizers::models::bpe::BPE;
use tokenizers::{AddedToken, Tokenizer};

/// GGUF token type of control tokens (`<|im_start|>`, `<|endoftext|>`).
const CONTROL: i32 = 3;
/// GGUF token type of user-defined added tokens (`<think>`).
const USER_DEFINED: i32 = 4;

/// One chat turn, as chat templates expect it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Message {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    bos: Option<(u32, String)>,
    eos: Option<(u32, String)>,
    add_bos: bool,
    chat_template: Option<String>,
}

impl TextTokenizer {
    pub fn from_gguf(metadata: &HashMap<String, gguf_file::Value>) -> Result<Self> {
        let string = |key: &str| metadata.get(key).and_then(|v| v.to_string().ok()).cloned();
        let id = |key: &str| metadata.get(key).and_then(|v| v.to_u32().ok());
        let kind = string("tokenizer.ggml.model").context("no tokenizer.ggml.model")?;
        if kind != "gpt2" {
            bail!(
                "the GGUF tokenizer '{kind}' is not supported; ferrolab reads byte-level BPE ('gpt2') vocabularies from GGUF, or any tokenizer.json from a model folder"
            );
        }
        let tokens: Vec<String> = metadata
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .context("no tokenizer.ggml.tokens")?
            .iter()
            .map(|v| {
                v.to_string()
                    .cloned()
                    .map_err(|e| anyhow!("bad token: {e}"))
            })
            .collect::<Result<_>>()?;
        let types: Vec<i32> = match metadata
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.to_vec().ok())
        {
            Some(types) => types.iter().map(|v| v.to_i32().unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        let merges: Vec<(String, String)> = metadata
            .get("tokenizer.ggml.merges")
            .and_then(|v| v.to_vec().ok())
            .context("no tokenizer.ggml.merges")?
            .iter()
            .filter_map(|v| v.to_string().ok())
            .filter_map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect();

        // Tokens are stored in GPT-2's byte alphabet; one that is not (a mislabelled
        // control token) is respelled into it, as transformers does.
        let alphabet = byte_alphabet();
        let spelled: std::collections::HashSet<char> = alphabet.iter().copied().collect();
        let respell = |token: &str| -> String {
            if token.chars().all(|c| spelled.contains(&c)) {
                token.to_string()
            } else {
                token.bytes().map(|b| alphabet[b as usize]).collect()
            }
        };
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (respell(t), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| anyhow!("cannot build the BPE tokenizer: {e}"))?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(
            tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, true, true),
        ));
        inner.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
        let control: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(t, ty)| **ty == CONTROL && t.chars().all(|c| spelled.contains(&c)))
            .map(|(t, _)| AddedToken::from(t.clone(), true))
            .collect();
        inner
            .add_special_tokens(control)
            .map_err(|e| anyhow!("cannot add the special tokens: {e}"))?;
        let user: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, ty)| **ty == USER_DEFINED)
            .map(|(t, _)| AddedToken::from(t.clone(), false))
            .collect();
        inner
            .add_tokens(user)
            .map_err(|e| anyhow!("cannot add the added tokens: {e}"))?;

        let named =
            |key: &str| id(key).and_then(|i| tokens.get(i as usize).map(|t| (i, t.clone())));
        Ok(TextTokenizer {
            inner,
            bos: named("tokenizer.ggml.bos_token_id"),
            eos: named("tokenizer.ggml.eos_token_id"),
            add_bos: metadata
                .get("tokenizer.ggml.add_bos_token")
                .and_then(|v| v.to_bool().ok())
                .unwrap_or(false),
            chat_template: string("tokenizer.chat_template"),
        })
    }

    /// `tokenizer.json` plus `tokenizer_config.json` (chat template, BOS/EOS) of a model folder.
    pub fn from_hf_folder(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let inner = Tokenizer::from_file(&path)
            .map_err(|e| anyhow!("cannot read {} ({e})", path.display()))?;
        let config: serde_json::Value =
            match std::fs::read_to_string(dir.join("tokenizer_config.json")) {
                Ok(text) => {
                    serde_json::from_str(&text).context("tokenizer_config.json is not JSON")?
                }
                Err(_) => serde_json::Value::Null,
            };
        let token = |key: &str| -> Option<(u32, String)> {
            let text = match &config[key] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Object(o) => o.get("content")?.as_str()?.to_string(),
                _ => return None,
            };
            inner.token_to_id(&text).map(|id| (id, text))
        };
        Ok(TextTokenizer {
            bos: token("bos_token"),
            eos: token("eos_token"),
            add_bos: config["add_bos_token"].as_bool().unwrap_or(false),
            chat_template: config["chat_template"].as_str().map(str::to_string),
            inner,
        })
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` into `dir`, as transformers reads them.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.inner
            .save(dir.join("tokenizer.json"), false)
            .map_err(|e| anyhow!("cannot write tokenizer.json: {e}"))?;
        let config = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": self.bos.as_ref().map(|(_, t)| t.clone()),
            "eos_token": self.eos.as_ref().map(|(_, t)| t.clone()),
            "add_bos_token": self.add_bos,
            "chat_template": self.chat_template,
        });
        std::fs::write(
            dir.join("tokenizer_config.json"),
            serde_json::to_string_pretty(&config)?,
        )?;
        Ok(())
    }

    /// Token ids of `text`; special tokens written in the text stay whole.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("cannot tokenize: {e}"))?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        if self.add_bos {
            if let Some((bos, _)) = &self.bos {
                ids.push(*bos);
            }
        }
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// Token ids of text that continues earlier text: no BOS.
    pub fn encode_continuation(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("cannot tokenize: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| anyhow!("cannot decode tokens: {e}"))
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos.as_ref().map(|(id, _)| *id)
    }

    pub fn eos_token(&self) -> Option<&str> {
        self.eos.as_ref().map(|(_, t)| t.as_str())
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// The prompt text for `messages`, rendered with the model's own chat template.
    pub fn apply_chat_template(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self.chat_template.as_deref().context(
            "this model has no chat template; send a plain prompt instead of chat messages",
        )?;
        render_chat_template(
            template,
            messages,
            add_generation_prompt,
            self.bos.as_ref().map(|(_, t)| t.as_str()).unwrap_or(""),
            self.eos.as_ref().map(|(_, t)| t.as_str()).unwrap_or(""),
        )
    }
}

/// Renders a Hugging Face chat template (Jinja) the way transformers does.
pub fn render_chat_template(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    // transformers renders with trim_blocks and lstrip_blocks.
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |message: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                message,
            ))
        },
    );
    env.add_template("chat", template)
        .map_err(|e| anyhow!("the model's chat template does not parse: {e}"))?;
    let rendered = env
        .get_template("chat")
        .and_then(|t| {
            t.render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => bos_token,
                eos_token => eos_token,
            })
        })
        .map_err(|e| anyhow!("the model's chat template failed: {e}"))?;
    Ok(rendered)
}

/// GPT-2's map from bytes to printable characters (`bytes_to_unicode`).
pub(crate) fn byte_alphabet() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    let mut alphabet = vec!['\0'; 256];
    for (b, c) in printable.into_iter().zip(chars) {
        alphabet[b as usize] = char::from_u32(c).unwrap_or('\u{FFFD}');
    }
    alphabet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_matches_gpt2() {
        let a = byte_alphabet();
        assert_eq!(a[b' ' as usize], 'Ġ');
        assert_eq!(a[b'\n' as usize], 'Ċ');
        assert_eq!(a[b'A' as usize], 'A');
        let distinct: std::collections::HashSet<char> = a.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }

    #[test]
    fn chatml_template_renders() -> Result<()> {
        let template = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
        let text = render_chat_template(template, &[Message::new("user", "Hi")], true, "", "")?;
        assert_eq!(
            text,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        Ok(())
    }

    #[test]
    fn template_errors_are_reported() {
        let err = render_chat_template(
            "{{ raise_exception('roles must alternate') }}",
            &[],
            false,
            "",
            "",
        )
        .unwrap_err();
        assert!(err.to_string().contains("roles must alternate"), "{err}");
    }
}
