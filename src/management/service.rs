//! The `plangate.v1.Management` service over the engine, the metrics' decision tap and the
//! reloader. Every answer is built from the same functions as the HTTP admin API and the CLI:
//! Explain is `Engine::explain_in`, usage is `crate::usage`, the configuration is
//! `admin::redacted`.

use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::catalog;
use super::paging::{page_size, position, token};
use super::pb;
use super::pb::management_server::Management;
use crate::clock::{NANOS_PER_SEC, Nanos};
use crate::engine::{Decision, Engine, LimitConfig, Outcome};
use crate::metrics::{Metrics, Watched};
use crate::reload::{ReloadError, Reloaded, Reloader};
use crate::usage::{self, UsageError};

/// Decisions a watcher's stream buffers before it loses them.
const WATCH_BUFFER: usize = 256;

/// The management API.
pub struct ManagementService {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    /// `None` when plangate was not started from a file (tests): Reload is then unavailable.
    reloader: Option<Arc<Reloader>>,
    /// The most WatchDecisions streams at once.
    max_watchers: usize,
}

/// The most WatchDecisions streams at once, unless configured (`--max-watchers`): a watcher
/// costs every decision a copy and an encoding — about 2 µs of CPU per decision each, measured
/// (docs/benchmarks.md) — and a thousand cut Check throughput to a third.
pub const DEFAULT_MAX_WATCHERS: usize = 4;

impl ManagementService {
    pub fn new(
        engine: Arc<Engine>,
        metrics: Arc<Metrics>,
        reloader: Option<Arc<Reloader>>,
    ) -> Self {
        ManagementService {
            engine,
            metrics,
            reloader,
            max_watchers: DEFAULT_MAX_WATCHERS,
        }
    }

    /// Sets the most WatchDecisions streams at once.
    pub fn with_max_watchers(mut self, max: usize) -> Self {
        self.max_watchers = max;
        self
    }
}

fn timestamp(t: Nanos) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.div_euclid(NANOS_PER_SEC),
        nanos: i32::try_from(t.rem_euclid(NANOS_PER_SEC)).unwrap_or(0),
    }
}

fn duration(ns: Nanos) -> prost_types::Duration {
    prost_types::Duration {
        seconds: ns.div_euclid(NANOS_PER_SEC),
        nanos: i32::try_from(ns.rem_euclid(NANOS_PER_SEC)).unwrap_or(0),
    }
}

/// The wire form of an outcome.
pub fn outcome(o: Outcome) -> pb::Outcome {
    match o {
        Outcome::Admitted => pb::Outcome::Admitted,
        Outcome::Forbidden => pb::Outcome::Forbidden,
        Outcome::MissingAuthenticationToken => pb::Outcome::MissingAuthenticationToken,
        Outcome::Throttled => pb::Outcome::Throttled,
        Outcome::QuotaExceeded => pb::Outcome::QuotaExceeded,
        Outcome::Unavailable => pb::Outcome::Unavailable,
    }
}

fn opt(s: &Option<Arc<str>>) -> String {
    s.as_deref().unwrap_or("").to_owned()
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// A message that names decision `d`: the fields every such message shares (outcome, reason,
/// the limit that decided, API, stage, method, key id, plan), then `rest`.
macro_rules! naming {
    ($message:path, $d:expr, { $($rest:tt)* }) => {{
        let d: &Decision = $d;
        $message {
            outcome: outcome(d.outcome) as i32,
            reason: d.reason.map_or("", |r| r.as_str()).to_owned(),
            decided_by: d.decided_by.map_or("", |k| k.as_str()).to_owned(),
            api: opt(&d.api),
            stage: opt(&d.stage),
            method: opt(&d.method),
            api_key_id: opt(&d.key_id),
            usage_plan_id: opt(&d.plan_id),
            $($rest)*
        }
    }};
}

fn explained(d: &Decision) -> pb::ExplainResponse {
    naming!(pb::ExplainResponse, d, {
        outcome_name: d.outcome.as_str().to_owned(),
        customer_id: opt(&d.customer_id),
        limits: d
            .limits
            .iter()
            .map(|l| pb::LimitReport {
                limit: l.kind.as_str().to_owned(),
                admitted: l.state.admitted,
                remaining: l.state.remaining,
                reset_after: l.state.reset_after.map(duration),
                retry_after: if l.state.admitted {
                    None
                } else {
                    l.state.retry_after.map(duration)
                },
                config: Some(match l.config {
                    LimitConfig::Throttle { rate, burst } => {
                        pb::limit_report::Config::Throttle(pb::Throttle { rate, burst })
                    }
                    LimitConfig::Quota {
                        limit,
                        period,
                        window_start,
                        window_end,
                    } => pb::limit_report::Config::Quota(pb::QuotaPeriod {
                        limit,
                        period: period.as_str().to_owned(),
                        period_start: Some(timestamp(window_start)),
                        period_end: Some(timestamp(window_end)),
                    }),
                }),
            })
            .collect(),
        retry_after_seconds: d.retry_after_secs,
        json: d.explain().to_string(),
    })
}

fn usage_status(e: UsageError) -> Status {
    match &e {
        UsageError::UnknownPlan(_)
        | UsageError::UnknownKey(_)
        | UsageError::KeyNotInPlan { .. } => Status::not_found(e.to_string()),
        UsageError::NoQuota(_) => Status::failed_precondition(e.to_string()),
        UsageError::BadRequest(_) => Status::invalid_argument(e.to_string()),
        UsageError::Store(_) => Status::unavailable(e.to_string()),
    }
}

fn watched(w: &Watched, dropped: u64) -> pb::WatchDecisionsResponse {
    naming!(pb::WatchDecisionsResponse, &w.decision, {
        time: Some(timestamp(w.time)),
        service: w.service.as_str().to_owned(),
        dropped,
    })
}

#[tonic::async_trait]
impl Management for ManagementService {
    async fn explain(
        &self,
        request: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let r = request.into_inner();
        if r.method.is_empty() || !r.path.starts_with('/') {
            return Err(Status::invalid_argument(
                "method and path (starting with /) are required",
            ));
        }
        let now = match r.at {
            Some(t) => t
                .seconds
                .checked_mul(NANOS_PER_SEC)
                .and_then(|s| s.checked_add(i64::from(t.nanos)))
                .ok_or_else(|| Status::invalid_argument("`at` is out of range"))?,
            None => self.engine.clock().now(),
        };
        let req = crate::engine::Request::new(&r.method, &r.path, non_empty(&r.api_key), r.hits)
            .stage(non_empty(&r.api), non_empty(&r.stage))
            .host(non_empty(&r.host));
        let snap = self.engine.snapshot();
        let d = self.engine.explain_in(&snap, &req, now).await;
        Ok(Response::new(explained(&d)))
    }

    async fn get_usage(
        &self,
        request: Request<pb::GetUsageRequest>,
    ) -> Result<Response<pb::GetUsageResponse>, Status> {
        let r = request.into_inner();
        let start = usage::parse_date(&r.start_date).map_err(usage_status)?;
        let end = usage::parse_date(&r.end_date).map_err(usage_status)?;
        // Pages of keys, in key order; a page resumes after the last key of the previous one.
        let after = match r.page_token.as_str() {
            "" => None,
            t => Some(position(t)?),
        };
        let size = page_size(r.page_size, 25, 500);
        // The report's position is the first key of a page (inclusive): the smallest id after
        // `after` is `after` + NUL (key ids hold no NUL).
        let page = usage::Page {
            limit: Some(size),
            position: after.map(|a| format!("{a}\0")),
        };
        let now = self.engine.clock().now();
        let report = usage::report_page(
            &self.engine,
            &r.usage_plan_id,
            start,
            end,
            non_empty(&r.key_id),
            now,
            &page,
        )
        .await
        .map_err(usage_status)?;
        let last = report.items.keys().next_back().cloned();
        let next_page_token = match (&report.position, last) {
            (Some(_), Some(last)) => token(&last),
            _ => String::new(),
        };
        let items = report
            .items
            .into_iter()
            .map(|(key, days)| {
                let days = days
                    .iter()
                    .map(|(used, remaining)| pb::UsageDay {
                        used: *used,
                        remaining: *remaining,
                    })
                    .collect();
                (key, pb::DailyUsage { days })
            })
            .collect();
        Ok(Response::new(pb::GetUsageResponse {
            usage_plan_id: report.usage_plan_id,
            start_date: report.start_date,
            end_date: report.end_date,
            items,
            next_page_token,
        }))
    }

    async fn update_usage(
        &self,
        request: Request<pb::UpdateUsageRequest>,
    ) -> Result<Response<pb::UpdateUsageResponse>, Status> {
        let r = request.into_inner();
        let now = self.engine.clock().now();
        let c = usage::update(&self.engine, &r.usage_plan_id, &r.key_id, r.remaining, now)
            .await
            .map_err(usage_status)?;
        tracing::info!(plan = %r.usage_plan_id, key_id = %r.key_id, remaining = r.remaining, "usage updated (gRPC)");
        Ok(Response::new(pb::UpdateUsageResponse {
            period_start: Some(timestamp(c.period_start)),
            period_end: Some(timestamp(c.period_end)),
            usage_plan_id: c.usage_plan_id,
            key_id: c.key_id,
            limit: c.limit,
            used: c.used,
            remaining: c.remaining,
            period: c.period.to_owned(),
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        catalog::list_api_keys(&self.engine, request.get_ref()).map(Response::new)
    }

    async fn get_api_key(
        &self,
        request: Request<pb::GetApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        catalog::get_api_key(&self.engine, &request.get_ref().id)
            .await
            .map(Response::new)
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        catalog::create_api_key(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn update_api_key(
        &self,
        request: Request<pb::UpdateApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        catalog::update_api_key(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn delete_api_key(
        &self,
        request: Request<pb::DeleteApiKeyRequest>,
    ) -> Result<Response<pb::DeleteApiKeyResponse>, Status> {
        catalog::delete_api_key(&self.engine, &request.get_ref().id).await?;
        Ok(Response::new(pb::DeleteApiKeyResponse {}))
    }

    async fn list_usage_plans(
        &self,
        request: Request<pb::ListUsagePlansRequest>,
    ) -> Result<Response<pb::ListUsagePlansResponse>, Status> {
        catalog::list_usage_plans(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_usage_plan(
        &self,
        request: Request<pb::GetUsagePlanRequest>,
    ) -> Result<Response<pb::UsagePlan>, Status> {
        catalog::get_usage_plan(&self.engine, &request.get_ref().id)
            .await
            .map(Response::new)
    }

    async fn create_usage_plan(
        &self,
        request: Request<pb::CreateUsagePlanRequest>,
    ) -> Result<Response<pb::UsagePlan>, Status> {
        catalog::create_usage_plan(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn update_usage_plan(
        &self,
        request: Request<pb::UpdateUsagePlanRequest>,
    ) -> Result<Response<pb::UsagePlan>, Status> {
        catalog::update_usage_plan(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn delete_usage_plan(
        &self,
        request: Request<pb::DeleteUsagePlanRequest>,
    ) -> Result<Response<pb::DeleteUsagePlanResponse>, Status> {
        catalog::delete_usage_plan(&self.engine, &request.get_ref().id).await?;
        Ok(Response::new(pb::DeleteUsagePlanResponse {}))
    }

    async fn list_usage_plan_keys(
        &self,
        request: Request<pb::ListUsagePlanKeysRequest>,
    ) -> Result<Response<pb::ListUsagePlanKeysResponse>, Status> {
        catalog::list_usage_plan_keys(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn create_usage_plan_key(
        &self,
        request: Request<pb::CreateUsagePlanKeyRequest>,
    ) -> Result<Response<pb::UsagePlanKey>, Status> {
        catalog::create_usage_plan_key(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn export(
        &self,
        _request: Request<pb::ExportRequest>,
    ) -> Result<Response<pb::ExportResponse>, Status> {
        let snap = self.engine.snapshot();
        let yaml = {
            let state = self.engine.catalog().read();
            crate::migrate::export(&snap, &state)
        }
        .map_err(Status::failed_precondition)?;
        Ok(Response::new(pb::ExportResponse { yaml }))
    }

    async fn delete_usage_plan_key(
        &self,
        request: Request<pb::DeleteUsagePlanKeyRequest>,
    ) -> Result<Response<pb::DeleteUsagePlanKeyResponse>, Status> {
        catalog::delete_usage_plan_key(&self.engine, request.into_inner()).await?;
        Ok(Response::new(pb::DeleteUsagePlanKeyResponse {}))
    }

    async fn get_config(
        &self,
        _: Request<pb::GetConfigRequest>,
    ) -> Result<Response<pb::GetConfigResponse>, Status> {
        let snap = self.engine.snapshot();
        let fingerprint = match &self.reloader {
            Some(r) => hex::encode(r.fingerprint().await),
            None => String::new(),
        };
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Response::new(pb::GetConfigResponse {
            generation: snap.generation,
            source_fingerprint: fingerprint,
            apis: count(snap.apis.len()),
            stages: count(snap.stage_names.len()),
            usage_plans: count(snap.plans.len()),
            api_keys: count(snap.keys.len()),
            domain_names: count(snap.domains.list().len()),
            redacted_json: crate::config::render::redacted(&snap).to_string(),
        }))
    }

    async fn reload(
        &self,
        _: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        use pb::reload_response::Result as R;
        let Some(reloader) = &self.reloader else {
            return Err(Status::unimplemented(
                "not started from a configuration file",
            ));
        };
        let (result, errors) = match reloader.reload("grpc").await {
            Ok(Reloaded::Swapped { .. }) => (R::Swapped, Vec::new()),
            Ok(Reloaded::Unchanged) => (R::Unchanged, Vec::new()),
            Err(ReloadError::Rejected(errors)) => (
                R::Rejected,
                errors
                    .0
                    .iter()
                    .map(|e| pb::ConfigError {
                        file: e
                            .file
                            .as_ref()
                            .map(|f| f.display().to_string())
                            .unwrap_or_default(),
                        line: e.at.map_or(0, |a| u32::try_from(a.line).unwrap_or(0)),
                        column: e.at.map_or(0, |a| u32::try_from(a.col).unwrap_or(0)),
                        path: e.path.to_string(),
                        message: e.kind.to_string(),
                    })
                    .collect(),
            ),
            Err(e) => return Err(Status::unavailable(e.to_string())),
        };
        Ok(Response::new(pb::ReloadResponse {
            result: result as i32,
            generation: self.engine.snapshot().generation,
            errors,
        }))
    }

    type WatchDecisionsStream = ReceiverStream<Result<pb::WatchDecisionsResponse, Status>>;

    async fn watch_decisions(
        &self,
        request: Request<pb::WatchDecisionsRequest>,
    ) -> Result<Response<Self::WatchDecisionsStream>, Status> {
        let r = request.into_inner();
        let key = non_empty(&r.api_key_id).map(str::to_owned);
        let want = pb::Outcome::try_from(r.outcome).unwrap_or(pb::Outcome::Unset);
        let Some(mut tap) = self.metrics.watch_at_most(self.max_watchers) else {
            return Err(Status::resource_exhausted(format!(
                "{} watchers are watching already, the most this plangate serves (--max-watchers)",
                self.max_watchers
            )));
        };
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        // A task per watcher between the tap and the stream: it never waits on a slow reader
        // (a full buffer counts a drop), and ends when the watcher goes.
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            let mut dropped = 0u64;
            loop {
                let next = tokio::select! {
                    next = tap.recv() => next,
                    // The watcher went away.
                    () = tx.closed() => break,
                };
                let w = match next {
                    Ok(w) => w,
                    Err(RecvError::Lagged(n)) => {
                        dropped += n;
                        continue;
                    }
                    Err(RecvError::Closed) => break,
                };
                if key
                    .as_deref()
                    .is_some_and(|k| w.decision.key_id.as_deref() != Some(k))
                    || (want != pb::Outcome::Unset && outcome(w.decision.outcome) != want)
                {
                    continue;
                }
                match tx.try_send(Ok(watched(&w, dropped))) {
                    Ok(()) => dropped = 0,
                    Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => dropped += 1,
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => break,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
