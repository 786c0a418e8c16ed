//! Chat templates: the Jinja renderer (`render`), the built-in styles (`styles`) and how a config
//! names a template (a style, `tokenizer_default[_fallback_<style>]` or `jinja`). Conversation
//! formats, preference formats and the tokenizer's saved template all read templates from here.

pub mod render;
pub mod render_memory;
pub mod styles;

use std::path::Path;

use crate::error::{Error, Result};
use crate::sample::TokenizerInfo;

pub use render::{ChatTemplate, TemplateMessage};

fn config_error(key: &str, message: impl Into<String>) -> Error {
    Error::Config {
        key: key.to_owned(),
        message: message.into(),
    }
}

fn known_styles() -> String {
    styles::names().join(", ")
}

/// The Jinja source of a template named the way configs name it (a style,
/// `tokenizer_default[_fallback_<style>]` or `jinja`), e.g. for the top-level
/// `chat_template` that is saved with the tokenizer.
pub fn source(name: &str, jinja: Option<&str>, tokenizer: &TokenizerInfo) -> Result<String> {
    resolve_named("chat_template", name, jinja, tokenizer).map(|(_, source, _)| source)
}

/// The file a `chat_template_jinja` value names, when it names one rather than holding the
/// template text: its contents, not its name, are what the store's fingerprint must hash.
pub fn jinja_file(jinja: &str) -> Option<&Path> {
    let looks_like_template = jinja.contains("{{") || jinja.contains("{%");
    Some(Path::new(jinja)).filter(|path| !looks_like_template && path.is_file())
}

/// `(name, Jinja source, built-in style if it is one)` of the template `requested` names, for
/// config key `key`; `jinja` is `chat_template_jinja` (text or a file) for `requested = "jinja"`.
pub fn resolve_named(
    key: &str,
    requested: &str,
    jinja: Option<&str>,
    tokenizer: &TokenizerInfo,
) -> Result<(String, String, Option<&'static styles::Style>)> {
    if requested == "jinja" {
        let Some(jinja) = jinja else {
            return Err(config_error(
                "chat_template_jinja",
                "chat_template = \"jinja\" needs chat_template_jinja (the template text or a file path)",
            ));
        };
        let source = match jinja_file(jinja) {
            Some(path) => fs_err::read_to_string(path)?,
            None => jinja.to_owned(),
        };
        return Ok(("chat_template_jinja".to_owned(), source, None));
    }
    let fallback = requested.strip_prefix("tokenizer_default_fallback_");
    if requested == "tokenizer_default" || fallback.is_some() {
        if let Some(source) = &tokenizer.chat_template {
            // A built-in style saved as the tokenizer's template (the top-level chat_template)
            // keeps its end-of-turn marker.
            let style = styles::STYLES.iter().find(|style| style.source == source);
            return Ok(("tokenizer_default".to_owned(), source.clone(), style));
        }
        let Some(style_name) = fallback else {
            return Err(config_error(
                key,
                format!(
                    "the tokenizer has no chat_template in tokenizer_config.json; name a style ({}) or use \
                     chat_template = \"jinja\" with chat_template_jinja",
                    known_styles()
                ),
            ));
        };
        return style_source(key, style_name);
    }
    style_source(key, requested)
}

fn style_source(key: &str, name: &str) -> Result<(String, String, Option<&'static styles::Style>)> {
    let style = styles::find(name).ok_or_else(|| {
        config_error(
            key,
            format!(
                "unknown chat template `{name}`; built-in styles: {}, or tokenizer_default, \
                 tokenizer_default_fallback_<style>, jinja",
                known_styles()
            ),
        )
    })?;
    Ok((style.name.to_owned(), style.source.to_owned(), Some(style)))
}
