//! The consumer usage page (`--consumer-listen`, off by default): an API consumer presents
//! their key and sees their own plans, limits, what remains of their quota and when it resets,
//! and their last 30 days of usage — the numbers of GetUsage, of their key only.
//!
//! The key is posted (never in a URL, so never in an access log or a browser's history), not
//! logged, not kept, and not shown back: the answer names the key's id and name only. Lookups
//! are throttled per client address (a wrong key counts like a right one), so the page is no
//! oracle for guessing keys.

use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Form, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use maud::html;

use super::assets;
use super::pages::{self, chart};
use super::session::PerClient;
use crate::catalog::records::{ApiKeyRecord, UsagePlanRecord};
use crate::catalog::views;
use crate::clock::{NANOS_PER_SEC, Nanos};
use crate::engine::Engine;
use crate::snapshot::hash_key;

/// Lookups one client address may make per minute.
pub const LOOKUPS_PER_MINUTE: u32 = 20;

/// Days of usage the page shows.
pub const DAYS: u64 = 30;

/// What the page's handlers share.
#[derive(Clone)]
pub struct Consumer {
    pub engine: Arc<Engine>,
    lookups: Arc<PerClient>,
}

impl Consumer {
    pub fn new(engine: Arc<Engine>) -> Consumer {
        Consumer {
            engine,
            lookups: Arc::new(PerClient::new(LOOKUPS_PER_MINUTE, 60 * NANOS_PER_SEC)),
        }
    }
}

/// The page's routes (served on their own listener).
pub fn router(consumer: Consumer) -> Router {
    Router::new()
        .route("/", get(form).post(lookup))
        .route("/assets/console.css", get(assets::css))
        .route("/assets/favicon.svg", get(assets::favicon))
        .fallback(|| async { pages::consumer_page(StatusCode::NOT_FOUND, "Not found", html! {}) })
        .layer(axum::middleware::from_fn(assets::secure_headers))
        .with_state(consumer)
}

fn key_form(message: Option<&str>) -> maud::Markup {
    html! {
        @if let Some(m) = message { p.error role="alert" { (m) } }
        form method="post" action="/" {
            label for="key" { "Your API key" }
            input #key type="password" name="key" autocomplete="off" required maxlength="1024";
            button type="submit" { "Show my usage" }
        }
    }
}

async fn form() -> Response {
    pages::consumer_page(StatusCode::OK, "Your API usage", key_form(None))
}

#[derive(serde::Deserialize)]
struct KeyForm {
    #[serde(default)]
    key: String,
}

/// One plan of the key, as the page shows it.
struct PlanView {
    plan: UsagePlanRecord,
    /// The current quota period: (limit, remaining, resets at).
    current: Option<(u64, u64, Nanos)>,
    days: Vec<(u64, Option<u64>)>,
}

/// The key with value `value`: its record, whichever source holds it.
fn find(engine: &Engine, value: &str) -> Option<ApiKeyRecord> {
    let snap = engine.snapshot();
    let hash = hash_key(value);
    let id = match snap.key_by_hash(&hash) {
        Some(k) => k.id.to_string(),
        None => engine.catalog().with_key(&hash, |k| k.id.to_string())?,
    };
    let state = engine.catalog().read();
    views::key(&state, &snap, &id).ok().map(|(k, _)| k)
}

async fn lookup(
    State(c): State<Consumer>,
    ConnectInfo(crate::transport::ClientAddr(peer)): ConnectInfo<crate::transport::ClientAddr>,
    Form(f): Form<KeyForm>,
) -> Response {
    let now = c.engine.clock().now();
    if !c.lookups.allows(peer.ip(), now) {
        return pages::consumer_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Your API usage",
            key_form(Some("Too many lookups from this address: wait a minute.")),
        );
    }
    c.lookups.count(peer.ip(), now);
    let Some(key) = find(&c.engine, f.key.trim()) else {
        return pages::consumer_page(
            StatusCode::FORBIDDEN,
            "Your API usage",
            key_form(Some("No such API key.")),
        );
    };
    let plans = {
        let snap = c.engine.snapshot();
        let state = c.engine.catalog().read();
        let page = views::Page {
            limit: Some(views::MAX_PAGE),
            position: None,
        };
        views::plans(&state, &snap, Some(&key.id), &page)
            .map(|(p, _)| p)
            .unwrap_or_default()
    };
    let today = chrono::DateTime::from_timestamp_nanos(now).date_naive();
    let start = today - chrono::Days::new(DAYS - 1);
    let mut shown = Vec::new();
    for plan in plans {
        let current = crate::usage::current(&c.engine, &plan.id, &key.id, now)
            .await
            .ok()
            .map(|cur| (cur.limit, cur.remaining, cur.period_end));
        let report = crate::usage::report_page(
            &c.engine,
            &plan.id,
            start,
            today,
            Some(&key.id),
            now,
            &Default::default(),
        )
        .await;
        let days = match report {
            Ok(mut r) => r.items.remove(&key.id).unwrap_or_default(),
            Err(e) => {
                tracing::warn!(key_id = %key.id, plan = %plan.id, error = %e, "consumer page: usage unavailable");
                return pages::consumer_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Your API usage",
                    key_form(Some("Usage cannot be read just now: try again shortly.")),
                );
            }
        };
        shown.push(PlanView {
            plan,
            current,
            days,
        });
    }
    tracing::info!(key_id = %key.id, "consumer page: usage shown");
    page(&key, &shown, start)
}

fn page(key: &ApiKeyRecord, plans: &[PlanView], start: chrono::NaiveDate) -> Response {
    let body = html! {
        dl.facts {
            dt { "Key" } dd { code { (key.id) } @if let Some(n) = &key.name { " " (n) } }
            dt { "State" } dd { @if key.enabled { "enabled" } @else { "disabled: requests with it are refused" } }
        }
        @if plans.is_empty() { p { "This key is in no usage plan: requests with it are refused." } }
        @for v in plans {
            @let p = &v.plan;
            section aria-label={ "Usage plan " (p.name) } {
                h2 { "Plan " (p.name) }
                dl.facts {
                    dt { "APIs" } dd { @for s in &p.api_stages { (s.api_id) ":" (s.stage) " " } }
                    dt { "Throttle" } dd { @if let Some(t) = &p.throttle { (t.rate_limit.unwrap_or(0.0)) " requests/s, burst " (t.burst_limit.unwrap_or(0)) } @else { "none" } }
                    @for s in &p.api_stages {
                        @for (m, t) in &s.throttle {
                            dt { "Throttle of " code { (m) } } dd { (t.rate_limit.unwrap_or(0.0)) " requests/s, burst " (t.burst_limit.unwrap_or(0)) }
                        }
                    }
                    dt { "Quota" } dd {
                        @match (&p.quota, v.current) {
                            (Some(q), Some((limit, remaining, resets))) => {
                                span.remaining { (remaining) } " of " (limit) " requests remain " (match q.period.as_str() { "DAY" => "today", "WEEK" => "this week", _ => "this month" })
                                "; resets at " (crate::clock::format_rfc3339(resets))
                            }
                            (Some(q), None) => { (q.limit) " per " (q.period) }
                            (None, _) => "none",
                        }
                    }
                }
                (chart(&v.days))
                table {
                    caption { "Requests per day, last " (v.days.len()) " days" }
                    thead { tr { th scope="col" { "Day" } th scope="col" { "Used" } th scope="col" { "Remaining" } } }
                    tbody {
                        @for (i, (used, remaining)) in v.days.iter().enumerate() {
                            tr {
                                td { (start + chrono::Days::new(i as u64)) }
                                td { (used) }
                                td { @if let Some(r) = remaining { (r) } @else { "no quota" } }
                            }
                        }
                    }
                }
            }
        }
        p { a href="/" { "Look up another key" } }
    };
    pages::consumer_page(StatusCode::OK, "Your API usage", body)
}
