//! Operator-facing template errors.

use minijinja::ErrorKind;

/// A template failed to parse or render.
///
/// The message (see [`describe_error`]) names the template and line, quotes the
/// offending source line and lists the cause chain.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// minijinja reported an error while parsing or rendering.
    #[error("{message}")]
    Render {
        /// Template name as given to the renderer (file name or expression).
        name: String,
        /// 1-based line of the failing tag, when known.
        line: Option<usize>,
        /// The full one-paragraph description.
        message: String,
        /// The original error, for callers that need its kind.
        error: Box<minijinja::Error>,
    },
    /// A `#jinja2:` override line at the top of a template could not be applied.
    #[error(
        "{name}:1: invalid `#jinja2:` override line: {detail}. Supported keys are trim_blocks, lstrip_blocks and keep_trailing_newline with True/False values"
    )]
    Override {
        /// Template name.
        name: String,
        /// What was wrong.
        detail: String,
    },
}

impl TemplateError {
    /// Wraps a minijinja error, describing it with [`describe_error`].
    pub fn from_minijinja(err: minijinja::Error) -> Self {
        TemplateError::Render {
            name: err.name().unwrap_or("<template>").to_string(),
            line: err.line(),
            message: describe_error(&err),
            error: Box::new(err),
        }
    }

    /// True when the failure is an undefined variable, key or attribute.
    pub fn is_undefined(&self) -> bool {
        matches!(self, TemplateError::Render { error, .. } if error.kind() == ErrorKind::UndefinedError)
    }
}

impl From<minijinja::Error> for TemplateError {
    fn from(err: minijinja::Error) -> Self {
        Self::from_minijinja(err)
    }
}

fn hint(kind: ErrorKind) -> Option<&'static str> {
    Some(match kind {
        ErrorKind::UndefinedError => {
            "define it in the inventory or config, or guard it with `is defined` or `| default(...)`"
        }
        ErrorKind::UnknownFilter => {
            "this tool implements the filters kubeasz uses; check the filter name"
        }
        ErrorKind::UnknownMethod => "only common Python str/dict/list methods are available",
        ErrorKind::SyntaxError => "check the Jinja tag syntax on that line",
        _ => return None,
    })
}

/// Describes a minijinja error in one paragraph for operators:
/// `kube-flannel.yaml.j2:12: undefined value 'FLANNEL_BACKEND' (line: "backend: {{
/// FLANNEL_BACKEND }}"); define it in the inventory ...; caused by: ...`.
pub fn describe_error(err: &minijinja::Error) -> String {
    let mut msg = String::new();
    match (err.name(), err.line()) {
        (Some(name), Some(line)) => msg.push_str(&format!("{name}:{line}: ")),
        (Some(name), None) => msg.push_str(&format!("{name}: ")),
        _ => {}
    }
    msg.push_str(&headline(err));
    if let (Some(src), Some(line)) = (err.template_source(), err.line())
        && let Some(text) = src.lines().nth(line.saturating_sub(1))
        && !text.trim().is_empty()
    {
        let text = text.trim();
        let shown: String = text.chars().take(160).collect();
        let more = if text.chars().count() > 160 {
            "…"
        } else {
            ""
        };
        msg.push_str(&format!(" (line {line}: \"{shown}{more}\")"));
    }
    if let Some(h) = hint(err.kind()) {
        msg.push_str("; ");
        msg.push_str(h);
    }
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        msg.push_str("; caused by: ");
        // keep it one paragraph: some causes (regex parse errors) span several lines
        msg.push_str(
            &c.to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        );
        cause = c.source();
    }
    msg
}

/// "undefined value 'X'" for undefined names, otherwise "<kind>: <detail>".
fn headline(err: &minijinja::Error) -> String {
    let detail = err.detail().unwrap_or("");
    if err.kind() == ErrorKind::UndefinedError {
        // minijinja's detail reads "`expr` is undefined" (optionally with more context)
        if let Some(rest) = detail.strip_prefix('`')
            && let Some((expr, tail)) = rest.split_once("` is undefined")
        {
            return format!("undefined value '{expr}'{tail}");
        }
        if let Some((before, after)) = detail.split_once(" (`")
            && let Some((expr, _)) = after.split_once("` is undefined")
        {
            return format!("undefined value '{expr}': {before}");
        }
    }
    if detail.is_empty() {
        err.kind().to_string()
    } else {
        format!("{}: {detail}", err.kind())
    }
}
