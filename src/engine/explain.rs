//! A decision as JSON, limit by limit: what `plangate check` prints.

use serde_json::{Value, json};

use super::{Decision, LimitConfig, LimitReport};
use crate::clock::format_rfc3339;

impl Decision {
    /// The decision and every limit evaluated, as a JSON object.
    pub fn explain(&self) -> Value {
        json!({
            "outcome": self.outcome.as_str(),
            "reason": self.reason.map(|r| r.as_str()),
            "decided_by": self.decided_by.map(|k| k.as_str()),
            "api": self.api.as_deref(),
            "stage": self.stage.as_deref(),
            "method": self.method.as_deref(),
            "key_id": self.key_id.as_deref(),
            "usage_plan": self.plan_id.as_deref(),
            "customer_id": self.customer_id.as_deref(),
            "retry_after_seconds": self.retry_after_secs,
            "limits": self.limits.iter().map(LimitReport::explain).collect::<Vec<_>>(),
        })
    }
}

impl LimitReport {
    pub fn explain(&self) -> Value {
        let secs = |ns: Option<i64>| ns.map(|n| n as f64 / 1e9);
        let mut v = match self.config {
            LimitConfig::Throttle { rate, burst } => json!({
                "limit": self.kind.as_str(),
                "rate": rate,
                "burst": burst,
            }),
            LimitConfig::Quota {
                limit,
                period,
                window_start,
                window_end,
            } => json!({
                "limit": self.kind.as_str(),
                "quota": limit,
                "period": period.as_str(),
                "period_start": format_rfc3339(window_start),
                "period_end": format_rfc3339(window_end),
            }),
        };
        if let Value::Object(m) = &mut v {
            m.insert("admitted".into(), json!(self.state.admitted));
            m.insert("remaining".into(), json!(self.state.remaining));
            m.insert("reset_seconds".into(), json!(secs(self.state.reset_after)));
            if !self.state.admitted {
                m.insert(
                    "retry_after_seconds".into(),
                    json!(secs(self.state.retry_after)),
                );
            }
        }
        v
    }
}
