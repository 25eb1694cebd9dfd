//! The console's form for a runtime usage plan — create and edit — turned into the control
//! plane's own inputs: AWS's `CreateUsagePlan` body, or the `UpdateUsagePlan` patch that takes
//! the plan from what it is to what the form says (so the catalog's checks, and nothing of the
//! console's, decide what is valid).
//!
//! The form posts every field whole: name, description, the API stages (checkboxes, repeated
//! `stage` fields), the throttle (rate and burst, both empty for none), the quota (limit and
//! period, the limit empty for none) and the per-method throttles, one per line:
//! `api:stage /resource/path METHOD rate burst`.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use super::pages::{self, urlencode};
use super::session::Session;
use crate::catalog::ops::{CreateUsagePlan, Patch, PatchOperation};
use crate::catalog::records::{ApiStage, QuotaSettings, ThrottleSettings, UsagePlanRecord};

/// The most bytes a plan form may post (it holds a few lines; a larger body is refused).
pub const MAX_FORM: usize = 64 * 1024;

/// What the form posted.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PlanForm {
    pub csrf: String,
    pub name: String,
    pub description: String,
    /// `api:stage`, in the order posted.
    pub stages: Vec<String>,
    pub rate: String,
    pub burst: String,
    pub quota_limit: String,
    pub quota_period: String,
    pub methods: String,
}

impl PlanForm {
    /// Reads an `application/x-www-form-urlencoded` body (repeated `stage` fields kept).
    pub fn parse(body: &[u8]) -> PlanForm {
        let mut f = PlanForm::default();
        for (k, v) in form_urlencoded::parse(body) {
            let v = v.into_owned();
            match k.as_ref() {
                "csrf" => f.csrf = v,
                "name" => f.name = v,
                "description" => f.description = v,
                "stage" => f.stages.push(v),
                "rate" => f.rate = v.trim().to_owned(),
                "burst" => f.burst = v.trim().to_owned(),
                "quota_limit" => f.quota_limit = v.trim().to_owned(),
                "quota_period" => f.quota_period = v,
                "methods" => f.methods = v,
                _ => {}
            }
        }
        f
    }

    /// The form filled from a plan (for editing).
    pub fn of(p: &UsagePlanRecord) -> PlanForm {
        let mut methods = String::new();
        for s in &p.api_stages {
            for (m, t) in &s.throttle {
                let (path, verb) = m.rsplit_once('/').unwrap_or((m.as_str(), ""));
                methods.push_str(&format!(
                    "{}:{} {} {} {} {}\n",
                    s.api_id,
                    s.stage,
                    if path.is_empty() { "/" } else { path },
                    verb,
                    t.rate_limit.unwrap_or(0.0),
                    t.burst_limit.unwrap_or(0)
                ));
            }
        }
        PlanForm {
            csrf: String::new(),
            name: p.name.clone(),
            description: p.description.clone().unwrap_or_default(),
            stages: p
                .api_stages
                .iter()
                .map(|s| format!("{}:{}", s.api_id, s.stage))
                .collect(),
            rate: p
                .throttle
                .as_ref()
                .and_then(|t| t.rate_limit)
                .map(|r| r.to_string())
                .unwrap_or_default(),
            burst: p
                .throttle
                .as_ref()
                .and_then(|t| t.burst_limit)
                .map(|b| b.to_string())
                .unwrap_or_default(),
            quota_limit: p
                .quota
                .as_ref()
                .map(|q| q.limit.to_string())
                .unwrap_or_default(),
            quota_period: p
                .quota
                .as_ref()
                .map(|q| q.period.clone())
                .unwrap_or_else(|| "DAY".to_owned()),
            methods,
        }
    }

    fn throttle(&self) -> Result<Option<ThrottleSettings>, String> {
        if self.rate.is_empty() && self.burst.is_empty() {
            return Ok(None);
        }
        let rate: f64 = self
            .rate
            .parse()
            .ok()
            .filter(|r: &f64| r.is_finite())
            .ok_or_else(|| format!("The throttle's rate `{}` is not a number", self.rate))?;
        let burst: i64 = self.burst.parse().map_err(|_| {
            format!(
                "The throttle's burst `{}` is not a whole number",
                self.burst
            )
        })?;
        Ok(Some(ThrottleSettings {
            rate_limit: Some(rate),
            burst_limit: Some(burst),
        }))
    }

    fn quota(&self) -> Result<Option<QuotaSettings>, String> {
        if self.quota_limit.is_empty() {
            return Ok(None);
        }
        let limit: i64 = self.quota_limit.parse().map_err(|_| {
            format!(
                "The quota's limit `{}` is not a whole number",
                self.quota_limit
            )
        })?;
        Ok(Some(QuotaSettings {
            limit,
            offset: 0,
            period: self.quota_period.clone(),
        }))
    }

    /// The per-method throttles: `(api:stage) → (/path/METHOD → throttle)`.
    fn methods(&self) -> Result<BTreeMap<String, BTreeMap<String, ThrottleSettings>>, String> {
        let mut out: BTreeMap<String, BTreeMap<String, ThrottleSettings>> = BTreeMap::new();
        for (n, line) in self.methods.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let bad = || {
                format!(
                    "Per-method throttle line {}: `api:stage /path METHOD rate burst`, not `{line}`",
                    n + 1
                )
            };
            let [stage, path, method, rate, burst] = words[..] else {
                return Err(bad());
            };
            if !stage.contains(':') || !path.starts_with('/') {
                return Err(bad());
            }
            let rate: f64 = rate
                .parse()
                .ok()
                .filter(|r: &f64| r.is_finite())
                .ok_or_else(bad)?;
            let burst: i64 = burst.parse().map_err(|_| bad())?;
            let path = if path == "/" {
                "/"
            } else {
                path.trim_end_matches('/')
            };
            out.entry(stage.to_owned()).or_default().insert(
                format!("{path}/{}", method.to_ascii_uppercase()),
                ThrottleSettings {
                    rate_limit: Some(rate),
                    burst_limit: Some(burst),
                },
            );
        }
        Ok(out)
    }

    /// AWS's `CreateUsagePlan` body for this form.
    pub fn create(&self) -> Result<CreateUsagePlan, String> {
        let mut methods = self.methods()?;
        let mut api_stages = Vec::new();
        for s in &self.stages {
            let (api, stage) = s
                .split_once(':')
                .ok_or_else(|| format!("`{s}` is not an API stage"))?;
            api_stages.push(ApiStage {
                api_id: api.to_owned(),
                stage: stage.to_owned(),
                throttle: methods.remove(s).unwrap_or_default(),
            });
        }
        if let Some(s) = methods.keys().next() {
            return Err(format!(
                "A per-method throttle names {s}, which is not a stage of this plan"
            ));
        }
        Ok(CreateUsagePlan {
            name: Some(self.name.clone()),
            description: (!self.description.is_empty()).then(|| self.description.clone()),
            api_stages,
            throttle: self.throttle()?,
            quota: self.quota()?,
            tags: BTreeMap::new(),
        })
    }

    /// The `UpdateUsagePlan` patch that makes plan `old` what this form says (its quota offset
    /// and tags kept).
    pub fn patch(&self, old: &UsagePlanRecord) -> Result<Patch, String> {
        let mut ops = Vec::new();
        let mut op = |op: &str, path: String, value: Option<String>| {
            ops.push(PatchOperation {
                op: op.to_owned(),
                path,
                value,
                from: None,
            })
        };
        op("replace", "/name".into(), Some(self.name.clone()));
        op(
            "replace",
            "/description".into(),
            Some(self.description.clone()),
        );
        match self.throttle()? {
            Some(t) => {
                op(
                    "replace",
                    "/throttle/rateLimit".into(),
                    t.rate_limit.map(|r| r.to_string()),
                );
                op(
                    "replace",
                    "/throttle/burstLimit".into(),
                    t.burst_limit.map(|b| b.to_string()),
                );
            }
            None if old.throttle.is_some() => op("remove", "/throttle".into(), None),
            None => {}
        }
        match self.quota()? {
            Some(q) => {
                op("replace", "/quota/limit".into(), Some(q.limit.to_string()));
                op("replace", "/quota/period".into(), Some(q.period));
            }
            None if old.quota.is_some() => op("remove", "/quota".into(), None),
            None => {}
        }
        let was: Vec<String> = old
            .api_stages
            .iter()
            .map(|s| format!("{}:{}", s.api_id, s.stage))
            .collect();
        for s in was.iter().filter(|s| !self.stages.contains(s)) {
            op("remove", "/apiStages".into(), Some(s.clone()));
        }
        for s in self.stages.iter().filter(|s| !was.contains(s)) {
            op("add", "/apiStages".into(), Some(s.clone()));
        }
        let methods = self.methods()?;
        if let Some(s) = methods.keys().find(|s| !self.stages.contains(s)) {
            return Err(format!(
                "A per-method throttle names {s}, which is not a stage of this plan"
            ));
        }
        for (i, s) in self.stages.iter().enumerate() {
            if self.stages[..i].contains(s) {
                continue;
            }
            let had = old
                .api_stages
                .iter()
                .any(|a| format!("{}:{}", a.api_id, a.stage) == *s && !a.throttle.is_empty());
            if had {
                op("remove", format!("/apiStages/{s}/throttle"), None);
            }
            for (m, t) in methods.get(s).into_iter().flatten() {
                let m = m.replace('~', "~0").replace('/', "~1");
                op(
                    "replace",
                    format!("/apiStages/{s}/throttle/{m}/rateLimit"),
                    t.rate_limit.map(|r| r.to_string()),
                );
                op(
                    "replace",
                    format!("/apiStages/{s}/throttle/{m}/burstLimit"),
                    t.burst_limit.map(|b| b.to_string()),
                );
            }
        }
        Ok(Patch {
            patch_operations: ops,
        })
    }
}

/// The form, empty (`id` None: a new plan) or filled from a plan, with an error to show.
pub fn page(
    session: &Session,
    id: Option<&str>,
    f: &PlanForm,
    stages: &[String],
    error: Option<&str>,
) -> Response {
    let action = match id {
        Some(id) => format!("/ui/plans/{}/edit", urlencode(id)),
        None => "/ui/new-plan".to_owned(),
    };
    let body = html! {
        @if let Some(e) = error { p.error role="alert" #form-error { (e) } }
        form.plan method="post" action=(action) {
            input type="hidden" name="csrf" value=(session.csrf);
            label for="pname" { "Name" }
            input #pname type="text" name="name" value=(f.name) required maxlength="1024";
            label for="pdescription" { "Description" }
            input #pdescription type="text" name="description" value=(f.description) maxlength="4096";
            fieldset {
                legend { "API stages" }
                @for (i, s) in stages.iter().enumerate() {
                    div.check {
                        input type="checkbox" id={ "pstage" (i) } name="stage" value=(s) checked[f.stages.contains(s)];
                        label for={ "pstage" (i) } { (s) }
                    }
                }
            }
            fieldset {
                legend { "Throttle (both empty: none)" }
                label for="prate" { "Rate (requests per second)" }
                input #prate type="text" inputmode="decimal" name="rate" value=(f.rate);
                label for="pburst" { "Burst" }
                input #pburst type="text" inputmode="numeric" name="burst" value=(f.burst);
            }
            fieldset {
                legend { "Quota (limit empty: none)" }
                label for="pquota" { "Requests per period" }
                input #pquota type="text" inputmode="numeric" name="quota_limit" value=(f.quota_limit);
                label for="pperiod" { "Period" }
                select #pperiod name="quota_period" {
                    @for p in ["DAY", "WEEK", "MONTH"] { option value=(p) selected[f.quota_period == p] { (p) } }
                }
            }
            label for="pmethods" { "Per-method throttles, one per line: api:stage /path METHOD rate burst" }
            textarea #pmethods name="methods" rows="4" cols="60" { (f.methods) }
            button type="submit" { @if id.is_some() { "Save" } @else { "Create the plan" } }
        }
    };
    let title = match id {
        Some(id) => format!("Edit plan {id}"),
        None => "New usage plan".to_owned(),
    };
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    pages::page(status, &title, Some(session), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> UsagePlanRecord {
        UsagePlanRecord {
            id: "abc123".into(),
            name: "gold".into(),
            description: None,
            api_stages: vec![ApiStage {
                api_id: "petstore".into(),
                stage: "prod".into(),
                throttle: BTreeMap::from([(
                    "/pets/GET".to_owned(),
                    ThrottleSettings {
                        rate_limit: Some(5.0),
                        burst_limit: Some(10),
                    },
                )]),
            }],
            throttle: Some(ThrottleSettings {
                rate_limit: Some(100.0),
                burst_limit: Some(200),
            }),
            quota: Some(QuotaSettings {
                limit: 1000,
                offset: 0,
                period: "DAY".into(),
            }),
            product_code: None,
            tags: BTreeMap::new(),
            initial_period: None,
        }
    }

    #[test]
    fn a_form_reads_back_what_it_shows() {
        let p = plan();
        let f = PlanForm::of(&p);
        assert_eq!(f.methods, "petstore:prod /pets GET 5 10\n");
        let c = f.create().unwrap();
        assert_eq!(c.api_stages, p.api_stages);
        assert_eq!(c.throttle, p.throttle);
        assert_eq!(c.quota, p.quota);
        let body = "csrf=t&name=a%3Cb&stage=petstore%3Aprod&stage=petstore%3Adev&rate=&burst=&quota_limit=&quota_period=DAY&methods=";
        let f = PlanForm::parse(body.as_bytes());
        assert_eq!(f.stages, ["petstore:prod", "petstore:dev"]);
        assert_eq!(f.name, "a<b");
        let c = f.create().unwrap();
        assert!(c.throttle.is_none() && c.quota.is_none());
    }

    #[test]
    fn a_patch_takes_the_plan_to_the_form() {
        let old = plan();
        let mut f = PlanForm::of(&old);
        f.rate.clear();
        f.burst.clear();
        f.methods.clear();
        f.stages = vec!["petstore:dev".into()];
        let ops: Vec<(String, String)> = f
            .patch(&old)
            .unwrap()
            .patch_operations
            .into_iter()
            .map(|o| (o.op, o.path))
            .collect();
        assert!(ops.contains(&("remove".into(), "/throttle".into())));
        assert!(ops.contains(&("remove".into(), "/apiStages".into())));
        assert!(ops.contains(&("add".into(), "/apiStages".into())));
        let f = PlanForm {
            methods: "petstore:prod /pets/{id} get 1 2".into(),
            ..PlanForm::of(&old)
        };
        let ops = f.patch(&old).unwrap().patch_operations;
        assert!(
            ops.iter()
                .any(|o| o.path == "/apiStages/petstore:prod/throttle/~1pets~1{id}~1GET/rateLimit"),
            "{ops:?}"
        );
    }

    #[test]
    fn bad_lines_are_named() {
        let f = PlanForm {
            methods: "petstore:prod /pets GET fast 2".into(),
            stages: vec!["petstore:prod".into()],
            ..Default::default()
        };
        assert!(f.create().unwrap_err().contains("line 1"));
        let f = PlanForm {
            rate: "1e999".into(),
            burst: "1".into(),
            ..Default::default()
        };
        assert!(f.create().is_err());
        let f = PlanForm {
            methods: "petstore:dev /pets GET 1 2".into(),
            ..Default::default()
        };
        assert!(f.create().unwrap_err().contains("not a stage"));
    }
}
