//! Gateway responses (AWS `GatewayResponse`): what a refused request's client gets, customised
//! per response type — status, headers, body — at the top level of the configuration or per API.
//!
//! A refusal's type is found in this order, as AWS does within an API: the API's own response
//! of that type, the API's `DEFAULT_4XX`/`DEFAULT_5XX`; then the same at the top level; else
//! plangate's built-in answer (docs/semantics.md, "Answers").

use std::borrow::Cow;
use std::sync::Arc;

/// The response types plangate answers with (AWS names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseType {
    /// 429, a throttle refused.
    Throttled,
    /// 429, the quota refused.
    QuotaExceeded,
    /// 403, no such method (`unknown_methods: forbid`).
    MissingAuthenticationToken,
    /// 403, the key is missing, unknown, disabled or in no plan of the stage.
    InvalidApiKey,
    /// 403, no API, stage or domain mapping for the request.
    AccessDenied,
    /// Any other 4xx (a request plangate cannot read).
    Default4xx,
    /// Any 5xx (the counter store failed and the failure policy refused).
    Default5xx,
}

impl ResponseType {
    pub const ALL: [ResponseType; 7] = [
        ResponseType::Throttled,
        ResponseType::QuotaExceeded,
        ResponseType::MissingAuthenticationToken,
        ResponseType::InvalidApiKey,
        ResponseType::AccessDenied,
        ResponseType::Default4xx,
        ResponseType::Default5xx,
    ];

    /// AWS's name (`THROTTLED`, …), as the configuration writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseType::Throttled => "THROTTLED",
            ResponseType::QuotaExceeded => "QUOTA_EXCEEDED",
            ResponseType::MissingAuthenticationToken => "MISSING_AUTHENTICATION_TOKEN",
            ResponseType::InvalidApiKey => "INVALID_API_KEY",
            ResponseType::AccessDenied => "ACCESS_DENIED",
            ResponseType::Default4xx => "DEFAULT_4XX",
            ResponseType::Default5xx => "DEFAULT_5XX",
        }
    }

    pub fn parse(s: &str) -> Option<ResponseType> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The default a type falls back to within one level.
    fn default_of(self, status: u16) -> ResponseType {
        if status >= 500 {
            ResponseType::Default5xx
        } else {
            ResponseType::Default4xx
        }
    }
}

/// One customised response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayResponse {
    /// The HTTP status (ext_authz answers only: with the ratelimit filter, Envoy's own
    /// `rate_limited_status` decides).
    pub status: Option<u16>,
    /// Headers added to the answer (after plangate's own, replacing one of the same name).
    pub headers: Vec<(String, String)>,
    /// The body; the [`TEMPLATE_VARIABLES`] in it are replaced (others are refused at load).
    pub body: Option<String>,
}

/// The template variables a gateway response body may hold: the refusal's message quoted as a
/// JSON string, the message, and the response type (`THROTTLED`, … — the refusal's own type,
/// also when a `DEFAULT_4XX` answers it). AWS documents more `$context` variables (request id,
/// stage, …); plangate refuses them at load rather than send them literally.
pub const TEMPLATE_VARIABLES: [&str; 3] = [
    "$context.error.messageString",
    "$context.error.message",
    "$context.error.responseType",
];

/// The first template variable of `body` plangate does not fill in (`$context.requestId`,
/// `${context.stage}`, `$stageVariables.x`, `$input…`, `$util…`), if any.
pub fn unsupported_variable(body: &str) -> Option<String> {
    let b = body.as_bytes();
    let mut i = 0;
    while let Some(at) = body[i..].find('$') {
        let start = i + at;
        let rest = &body[start + 1..];
        let braced = rest.starts_with('{');
        let name: String = rest
            .chars()
            .skip(usize::from(braced))
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
            .collect();
        let name = name.trim_end_matches('.');
        let variable = format!("${name}");
        let known_root = ["context", "stageVariables", "input", "util", "method"]
            .iter()
            .any(|r| name == *r || name.starts_with(&format!("{r}.")));
        if known_root && (braced || !TEMPLATE_VARIABLES.contains(&variable.as_str())) {
            return Some(if braced {
                format!("${{{name}}}")
            } else {
                variable
            });
        }
        i = start + 1;
        if i >= b.len() {
            break;
        }
    }
    None
}

impl GatewayResponse {
    /// The body for a refusal of type `t` whose built-in message is `message` (`Too Many
    /// Requests`).
    pub fn body_for(&self, t: ResponseType, message: &str) -> Option<Cow<'_, str>> {
        let b = self.body.as_deref()?;
        if !b.contains("$context.error.") {
            return Some(Cow::Borrowed(b));
        }
        let quoted = serde_json::Value::from(message).to_string();
        Some(Cow::Owned(
            b.replace("$context.error.messageString", &quoted)
                .replace("$context.error.message", message)
                .replace("$context.error.responseType", t.as_str()),
        ))
    }
}

/// The responses of one level (top level or one API), by type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayResponses {
    by_type: [Option<Arc<GatewayResponse>>; 7],
}

impl GatewayResponses {
    pub fn set(&mut self, t: ResponseType, r: GatewayResponse) {
        self.by_type[t as usize] = Some(Arc::new(r));
    }

    pub fn is_empty(&self) -> bool {
        self.by_type.iter().all(Option::is_none)
    }

    fn get(&self, t: ResponseType) -> Option<&Arc<GatewayResponse>> {
        self.by_type[t as usize].as_ref()
    }

    /// This level's response for `t` (built-in status `status`): its own, else its default.
    fn find(&self, t: ResponseType, status: u16) -> Option<&Arc<GatewayResponse>> {
        self.get(t).or_else(|| self.get(t.default_of(status)))
    }

    /// The response for `t`, looking in `api` (the request's API's responses) first.
    pub fn resolve<'a>(
        api: Option<&'a GatewayResponses>,
        top: &'a GatewayResponses,
        t: ResponseType,
        status: u16,
    ) -> Option<&'a GatewayResponse> {
        api.and_then(|a| a.find(t, status))
            .or_else(|| top.find(t, status))
            .map(|r| &**r)
    }

    /// The configured responses, for reports: (type, response).
    pub fn list(&self) -> Vec<(ResponseType, &GatewayResponse)> {
        ResponseType::ALL
            .into_iter()
            .filter_map(|t| self.get(t).map(|r| (t, &**r)))
            .collect()
    }
}
