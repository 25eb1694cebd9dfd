//! The operator console at `/ui/` on the admin address: server-rendered HTML (maud, which
//! escapes every value it is given) over the same operations as the control plane
//! (`Engine::change`, `catalog::views`) — no second implementation of any of them.
//!
//! Security: a session cookie from a sign-in ([`session`]); every change is a POST carrying the
//! session's CSRF token from a page of the same origin; a strict Content-Security-Policy (no
//! script, no style, no frame from anywhere but the console itself, no inline script); no key
//! value or hash is ever rendered but the new key's value, once, on the page that answers its
//! creation (not cached). `read` sessions see everything and change nothing: their pages have
//! no forms, and the endpoints refuse them.
//!
//! This first slice: sign-in and sign-out, the overview, keys (search, paging, create, enable,
//! disable, delete), plans (list and detail). docs/console.md says what is still to come.

pub mod assets;
pub mod consumer;
pub mod live;
pub mod pages;
pub mod plan_form;
pub mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::catalog::views;
use crate::catalog::{CatalogError, ops};
use crate::control::Access;
use crate::engine::Engine;
use session::{COOKIE, Role, Session, Sessions, same};

/// What the console's handlers share.
#[derive(Clone)]
pub struct Console {
    pub engine: Arc<Engine>,
    pub access: Access,
    pub sessions: Arc<Sessions>,
    /// The admin address serves TLS: cookies are `Secure`.
    pub tls: bool,
    /// The decision tap (Live) and how many watchers it may have at once.
    pub metrics: Arc<crate::metrics::Metrics>,
    pub max_watchers: usize,
    pub live: Arc<live::Live>,
}

pub use assets::CSP;
use assets::{copy_js, css, favicon, live_js, secure_headers};

/// The console's routes.
pub fn router(console: Console) -> Router {
    let signed_in = Router::new()
        .route("/ui/", get(overview))
        .route("/ui/keys", get(keys).post(create_key))
        .route("/ui/keys/{id}", get(key))
        .route("/ui/keys/{id}/{action}", post(key_action))
        .route("/ui/live", get(live_page))
        .route("/ui/usage", get(usage_page))
        .route("/ui/explain", get(explain_form).post(explain))
        .route("/ui/plans", get(plans))
        .route("/ui/plans/{id}", get(plan))
        .route("/ui/new-plan", get(new_plan_form).post(create_plan))
        .route("/ui/plans/{id}/edit", get(edit_plan_form).post(edit_plan))
        .route("/ui/plans/{id}/delete", post(delete_plan))
        .route("/ui/keys/{id}/usage", post(set_usage))
        .route("/ui/signout", post(sign_out))
        .route_layer(axum::middleware::from_fn_with_state(
            console.clone(),
            require_session,
        ));
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/signin", get(sign_in_page).post(sign_in))
        .route("/ui/assets/console.css", get(css))
        .route("/ui/assets/live.js", get(live_js))
        .route("/ui/assets/copy.js", get(copy_js))
        .route("/ui/assets/favicon.svg", get(favicon))
        .merge(signed_in)
        .layer(axum::middleware::from_fn(secure_headers))
        .with_state(console)
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// Admits a request with a live session (put in its extensions); others go to the sign-in.
async fn require_session(State(c): State<Console>, mut req: Request, next: Next) -> Response {
    let now = c.engine.clock().now();
    let session = cookie_value(req.headers()).and_then(|t| c.sessions.get(&t, now));
    match session {
        Some(s) => {
            req.extensions_mut().insert(s);
            next.run(req).await
        }
        None if req.method() == axum::http::Method::GET => {
            Redirect::to("/ui/signin").into_response()
        }
        None => pages::error(
            StatusCode::UNAUTHORIZED,
            "Your session has ended: sign in again.",
        ),
    }
}

/// A change may come only from a console page of this session: its CSRF token, and (when the
/// browser says) this origin. The refusal: its status and message.
fn check_change(
    session: &Session,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<(), (StatusCode, &'static str)> {
    if session.role != Role::Admin {
        return Err((
            StatusCode::FORBIDDEN,
            "This session may read, not change (a read credential).",
        ));
    }
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("same-origin");
    if !matches!(site, "same-origin" | "none") || !same(csrf.as_bytes(), session.csrf.as_bytes()) {
        return Err((
            StatusCode::FORBIDDEN,
            "Refused: the form did not come from this console (CSRF).",
        ));
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct SignIn {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_key_id: String,
    #[serde(default)]
    secret_access_key: String,
}

async fn sign_in_page() -> Response {
    pages::sign_in(None)
}

/// Checks a sign-in: the admin token (an admin session), or an access key of the credentials
/// file (its role). With neither configured, anyone is admitted, as on the rest of the admin
/// address.
fn credential_role(access: &Access, f: &SignIn) -> Option<(Role, String)> {
    if !f.access_key_id.is_empty() {
        let keys = access.credentials.as_ref()?.keys();
        let (secret, role) = keys.get(&f.access_key_id)?;
        if !same(secret.as_bytes(), f.secret_access_key.as_bytes()) {
            return None;
        }
        let role = match role {
            crate::control::credentials::Role::Admin => Role::Admin,
            crate::control::credentials::Role::Read => Role::Read,
        };
        return Some((role, f.access_key_id.clone()));
    }
    let open = !access.token.is_set() && access.credentials.is_none();
    let bearer = format!("Bearer {}", f.token);
    (open || (access.token.is_set() && access.token.admits(Some(bearer.as_bytes()))))
        .then(|| (Role::Admin, "admin token".to_owned()))
}

async fn sign_in(
    State(c): State<Console>,
    ConnectInfo(crate::transport::ClientAddr(peer)): ConnectInfo<crate::transport::ClientAddr>,
    Form(f): Form<SignIn>,
) -> Response {
    let now = c.engine.clock().now();
    if !c.sessions.may_try(peer.ip(), now) {
        c.metrics.console_signin("throttled");
        return pages::sign_in_status(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed sign-ins from this address: wait a minute.",
        );
    }
    let Some((role, who)) = credential_role(&c.access, &f) else {
        c.sessions.failed(peer.ip(), now);
        c.metrics.console_signin("failed");
        tracing::warn!(client = %peer.ip(), "console sign-in failed");
        return pages::sign_in_status(StatusCode::UNAUTHORIZED, "Wrong token or access key.");
    };
    let Some((token, _)) = c.sessions.open(role, who.clone(), now) else {
        return pages::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "The OS random source failed.",
        );
    };
    c.metrics.console_signin("ok");
    tracing::info!(who = %who, read_only = role == Role::Read, "console sign-in");
    let secure = if c.tls { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        session::LIFETIME / crate::clock::NANOS_PER_SEC
    );
    let mut r = Redirect::to("/ui/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(serde::Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
    /// For `add-plan` and `remove-plan`: the plan.
    #[serde(default)]
    plan: String,
}

/// Keys per page of a plan's usage.
pub const USAGE_PAGE: usize = 50;

/// Days of usage a key's page shows.
pub const USAGE_DAYS: u64 = 30;

/// One key: its facts, its plans (add to one, remove from one), and its last 30 days of usage
/// in each plan (the numbers GetUsage gives).
async fn key(
    State(c): State<Console>,
    axum::Extension(session): axum::Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let snap = c.engine.snapshot();
    let (record, source, plan_ids, all_plans) = {
        let state = c.engine.catalog().read();
        let (record, source) = match views::key(&state, &snap, &id) {
            Ok(k) => k,
            Err(e) => return catalog_error(e),
        };
        let plan_ids: Vec<String> = match source {
            views::Source::Runtime => state.plans_of(&id).map(str::to_owned).collect(),
            views::Source::File => snap
                .key_by_id(&id)
                .map(|k| {
                    k.plans
                        .iter()
                        .map(|&i| snap.plans[i as usize].id.to_string())
                        .collect()
                })
                .unwrap_or_default(),
        };
        let all = views::every_plan(&state, &snap);
        (record, source, plan_ids, all)
    };
    let now = c.engine.clock().now();
    let today = chrono::DateTime::from_timestamp_nanos(now).date_naive();
    let start = today - chrono::Days::new(USAGE_DAYS - 1);
    let mut usage = Vec::new();
    for plan in &plan_ids {
        let report = crate::usage::report_page(
            &c.engine,
            plan,
            start,
            today,
            Some(&id),
            now,
            &Default::default(),
        )
        .await;
        let days = report
            .ok()
            .and_then(|mut r| r.items.remove(&id))
            .unwrap_or_default();
        usage.push((plan.clone(), days));
    }
    pages::key(&session, &record, source, &all_plans, &usage, start)
}

async fn sign_out(
    State(c): State<Console>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if !same(f.csrf.as_bytes(), session.csrf.as_bytes()) {
        return pages::error(StatusCode::FORBIDDEN, "Refused: CSRF.");
    }
    if let Some(t) = cookie_value(&headers) {
        c.sessions.close(&t);
    }
    let mut r = Redirect::to("/ui/signin").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "plangate_console=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    r
}

async fn overview(
    State(c): State<Console>,
    axum::Extension(session): axum::Extension<Session>,
) -> Response {
    let snap = c.engine.snapshot();
    let store = c.engine.store().ping().await;
    let now = c.engine.clock().now();
    let counts = c.metrics.decision_counts();
    let total = counts.iter().map(|x| x.2).sum();
    // Watching decisions (while somebody looks) gives the keys nearest their quota.
    let clock: Arc<dyn crate::clock::Clock> = Arc::new(crate::clock::SystemClock);
    let nearest = c
        .live
        .view(&c.metrics, clock, c.max_watchers)
        .map(|_| c.live.nearest(10, now));
    let figures = pages::OverviewFigures {
        rate: c.live.rate(now, total),
        counts,
        nearest,
        fingerprint: c.metrics.config_fingerprint(),
    };
    let state = c.engine.catalog().read();
    pages::overview(
        &session,
        &snap,
        &state,
        store.err().map(|e| e.message().to_owned()),
        &figures,
    )
}

#[derive(serde::Deserialize, Default)]
struct KeysQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    customer: String,
    #[serde(default)]
    position: String,
}

async fn keys(
    State(c): State<Console>,
    axum::Extension(session): axum::Extension<Session>,
    Query(q): Query<KeysQuery>,
) -> Response {
    let snap = c.engine.snapshot();
    let state = c.engine.catalog().read();
    let page = views::Page {
        limit: Some(50),
        position: (!q.position.is_empty()).then(|| q.position.clone()),
    };
    // An exact id first (on the first page), then names starting with the query.
    let by_id = (!q.q.is_empty() && q.position.is_empty())
        .then(|| views::key(&state, &snap, &q.q).ok())
        .flatten();
    let found = views::search_keys(
        &state,
        &snap,
        (!q.q.is_empty()).then_some(q.q.as_str()),
        (!q.customer.is_empty()).then_some(q.customer.as_str()),
        &page,
    );
    match found {
        Ok((mut list, next)) => {
            if let Some((k, _)) = by_id
                && !list.iter().any(|l| l.id == k.id)
                && (q.customer.is_empty() || k.customer_id.as_deref() == Some(q.customer.as_str()))
            {
                list.insert(0, k);
            }
            let plans = views::every_plan(&state, &snap);
            pages::keys(
                &session,
                &list,
                next.as_deref(),
                &q.q,
                &q.customer,
                &plans,
                &state,
            )
        }
        Err(e) => catalog_error(e),
    }
}

fn catalog_error(e: CatalogError) -> Response {
    pages::error(status_of(&e), &e.message)
}

fn status_of(e: &CatalogError) -> StatusCode {
    match e.kind {
        crate::catalog::ErrorKind::NotFound => StatusCode::NOT_FOUND,
        crate::catalog::ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        crate::catalog::ErrorKind::Conflict => StatusCode::CONFLICT,
        crate::catalog::ErrorKind::LimitExceeded => StatusCode::TOO_MANY_REQUESTS,
        crate::catalog::ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[derive(serde::Deserialize)]
struct NewKey {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    customer_id: String,
    #[serde(default)]
    plan: String,
}

async fn create_key(
    State(c): State<Console>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
    Form(f): Form<NewKey>,
) -> Response {
    if let Err((status, message)) = check_change(&session, &headers, &f.csrf) {
        return pages::error(status, message);
    }
    let input = ops::CreateApiKey {
        name: (!f.name.is_empty()).then(|| f.name.clone()),
        customer_id: (!f.customer_id.is_empty()).then(|| f.customer_id.clone()),
        enabled: true,
        ..Default::default()
    };
    let made = match c
        .engine
        .change(|st, snap, now| ops::create_api_key(st, snap, &input, now))
        .await
    {
        Ok(k) => k,
        Err(e) => return catalog_error(e),
    };
    tracing::info!(key_id = %made.record.id, who = %session.who, "console: API key created");
    if !f.plan.is_empty() {
        let id = made.record.id.clone();
        if let Err(e) = c
            .engine
            .change(|st, snap, _| ops::create_usage_plan_key(st, snap, &f.plan, &id, None))
            .await
        {
            return catalog_error(e);
        }
    }
    pages::key_created(&session, &made.record, &made.value, &f.plan)
}

async fn key_action(
    State(c): State<Console>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err((status, message)) = check_change(&session, &headers, &f.csrf) {
        return pages::error(status, message);
    }
    let done = match action.as_str() {
        "enable" | "disable" => {
            let patch = ops::Patch {
                patch_operations: vec![ops::PatchOperation {
                    op: "replace".into(),
                    path: "/enabled".into(),
                    value: Some((action == "enable").to_string()),
                    from: None,
                }],
            };
            c.engine
                .change(|st, snap, now| ops::update_api_key(st, snap, &id, &patch, now))
                .await
                .map(drop)
        }
        "delete" => {
            c.engine
                .change(|st, snap, _| ops::delete_api_key(st, snap, &id))
                .await
        }
        "add-plan" => c
            .engine
            .change(|st, snap, _| ops::create_usage_plan_key(st, snap, &f.plan, &id, None))
            .await
            .map(drop),
        "remove-plan" => {
            c.engine
                .change(|st, snap, _| ops::delete_usage_plan_key(st, snap, &f.plan, &id))
                .await
        }
        _ => return pages::error(StatusCode::NOT_FOUND, "No such action."),
    };
    match done {
        Ok(()) => {
            tracing::info!(key_id = %id, action = %action, plan = %f.plan, who = %session.who, "console: key changed");
            let back = if action == "delete" {
                "/ui/keys".to_owned()
            } else {
                format!("/ui/keys/{}", pages::urlencode(&id))
            };
            Redirect::to(&back).into_response()
        }
        Err(e) => catalog_error(e),
    }
}

async fn plans(
    State(c): State<Console>,
    axum::Extension(session): axum::Extension<Session>,
) -> Response {
    let snap = c.engine.snapshot();
    let state = c.engine.catalog().read();
    pages::plans(&session, &views::every_plan(&state, &snap), &state)
}

async fn plan(
    State(c): State<Console>,
    axum::Extension(session): axum::Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let snap = c.engine.snapshot();
    let found = {
        let state = c.engine.catalog().read();
        views::plan(&state, &snap, &id).and_then(|(p, source)| {
            let keys = views::plan_keys(
                &state,
                &snap,
                &id,
                None,
                &views::Page {
                    limit: Some(100),
                    position: None,
                },
            )?;
            Ok((p, source, keys.0, keys.1))
        })
    };
    let (p, source, keys, next) = match found {
        Ok(f) => f,
        Err(e) => return catalog_error(e),
    };
    let now = c.engine.clock().now();
    let today = chrono::DateTime::from_timestamp_nanos(now).date_naive();
    let start = today - chrono::Days::new(USAGE_DAYS - 1);
    let ids: Vec<Arc<str>> = keys.iter().map(|k| Arc::from(k.id.as_str())).collect();
    let daily = crate::usage::daily_total(&c.engine, &id, &ids, start, USAGE_DAYS)
        .await
        .ok()
        .map(|days| pages::PlanDaily {
            start,
            days: days.into_iter().map(|d| (d, None)).collect(),
            partial: next.is_some(),
        });
    pages::plan(&session, &p, source, &keys, &snap.source, daily.as_ref())
}

#[derive(serde::Deserialize, Default)]
struct LiveQuery {
    #[serde(default)]
    key: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    stage: String,
}

/// The latest decisions, filtered by key id, outcome and API/stage; a small script refreshes
/// the table every 2 s until paused (without script: a Refresh link).
async fn live_page(
    State(c): State<Console>,
    axum::Extension(session): axum::Extension<Session>,
    Query(q): Query<LiveQuery>,
) -> Response {
    let clock: Arc<dyn crate::clock::Clock> = Arc::new(crate::clock::SystemClock);
    let Some(recent) = c.live.view(&c.metrics, clock, c.max_watchers) else {
        return pages::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Every decision watcher is taken (--max-watchers): try again later.",
        );
    };
    let shown: Vec<_> = recent
        .into_iter()
        .filter(|w| q.key.is_empty() || w.decision.key_id.as_deref() == Some(q.key.as_str()))
        .filter(|w| q.outcome.is_empty() || w.decision.outcome.as_str() == q.outcome)
        .filter(|w| {
            q.stage.is_empty()
                || format!(
                    "{}:{}",
                    w.decision.api.as_deref().unwrap_or(""),
                    w.decision.stage.as_deref().unwrap_or("")
                ) == q.stage
        })
        .collect();
    pages::live(
        &session,
        &shown,
        &q.key,
        &q.outcome,
        &q.stage,
        c.live.lost.load(std::sync::atomic::Ordering::Relaxed),
    )
}

#[derive(serde::Deserialize, Default)]
struct UsageQuery {
    #[serde(default)]
    plan: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    start: String,
    #[serde(default)]
    end: String,
    #[serde(default)]
    format: String,
    /// A plan's usage: the key the page starts at.
    #[serde(default)]
    position: String,
}

/// Usage of a plan (one key or every key) over a date range — a chart and a table per key, or
/// the CSV `plangate usage --format csv` writes: the numbers of GetUsage.
async fn usage_page(
    State(c): State<Console>,
    axum::Extension(session): axum::Extension<Session>,
    Query(q): Query<UsageQuery>,
) -> Response {
    let snap = c.engine.snapshot();
    let plans = {
        let state = c.engine.catalog().read();
        views::every_plan(&state, &snap)
    };
    let now = c.engine.clock().now();
    let today = chrono::DateTime::from_timestamp_nanos(now).date_naive();
    let default_start = (today - chrono::Days::new(USAGE_DAYS - 1)).to_string();
    let start = if q.start.is_empty() {
        default_start
    } else {
        q.start.clone()
    };
    let end = if q.end.is_empty() {
        today.to_string()
    } else {
        q.end.clone()
    };
    if q.plan.is_empty() {
        return pages::usage(&session, &plans, &q.plan, &q.key, &start, &end, None, None);
    }
    // One key; or for the whole plan, a page of its keys (by id, with or without usage), so
    // that the page costs the same for a plan of a million keys. The CSV has every key.
    let (page_keys, next) = if q.key.is_empty() && q.format != "csv" {
        let state = c.engine.catalog().read();
        let page = views::Page {
            limit: Some(USAGE_PAGE),
            position: (!q.position.is_empty()).then(|| q.position.clone()),
        };
        match views::plan_keys(&state, &snap, &q.plan, None, &page) {
            Ok((keys, next)) => (
                Some(
                    keys.into_iter()
                        .map(|k| Arc::from(k.id.as_str()))
                        .collect::<Vec<Arc<str>>>(),
                ),
                next,
            ),
            Err(e) => return catalog_error(e),
        }
    } else {
        (None, None)
    };
    let report = async {
        let s = crate::usage::parse_date(&start)?;
        let e = crate::usage::parse_date(&end)?;
        let which = match (&page_keys, q.key.is_empty()) {
            (Some(keys), _) => crate::usage::Keys::These(keys),
            (None, false) => crate::usage::Keys::One(&q.key),
            (None, true) => crate::usage::Keys::All,
        };
        crate::usage::report_of(&c.engine, &q.plan, s, e, which, now, &Default::default()).await
    }
    .await;
    match report {
        Ok(r) if q.format == "csv" => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"usage-{}-{}-{}.csv\"",
                        pages::urlencode(&q.plan),
                        r.start_date,
                        r.end_date
                    ),
                ),
            ],
            crate::usage::to_csv(&r),
        )
            .into_response(),
        Ok(r) => pages::usage(
            &session,
            &plans,
            &q.plan,
            &q.key,
            &start,
            &end,
            Some((&r, next.as_deref())),
            None,
        ),
        Err(e) => pages::usage(
            &session,
            &plans,
            &q.plan,
            &q.key,
            &start,
            &end,
            None,
            Some(&e.to_string()),
        ),
    }
}

/// The API stages of the configuration, `api:stage`, sorted.
fn stages(snap: &crate::snapshot::Snapshot) -> Vec<String> {
    let mut out: Vec<String> = snap
        .apis
        .iter()
        .flat_map(|(a, api)| api.stages.keys().map(move |s| format!("{a}:{s}")))
        .collect();
    out.sort();
    out
}

async fn explain_form(
    State(c): State<Console>,
    axum::Extension(session): axum::Extension<Session>,
) -> Response {
    pages::explain(&session, &stages(&c.engine.snapshot()), ("", "", ""), None)
}

#[derive(serde::Deserialize, Default)]
struct ExplainForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    stage: String,
    #[serde(default)]
    method: String,
    #[serde(default)]
    path: String,
    /// The key's value: posted, never in a URL, never shown back.
    #[serde(default)]
    key: String,
}

/// What plangate would decide for a key, method and path, limit by limit, on the live counters,
/// charging nothing (`Engine::explain_in`, as the management API's Explain). A POST, so that the
/// key stays out of URLs and logs; read sessions may ask.
async fn explain(
    State(c): State<Console>,
    axum::Extension(session): axum::Extension<Session>,
    Form(f): Form<ExplainForm>,
) -> Response {
    if !same(f.csrf.as_bytes(), session.csrf.as_bytes()) {
        return pages::error(StatusCode::FORBIDDEN, "Refused: CSRF.");
    }
    let snap = c.engine.snapshot();
    let (api, stage) = f.stage.split_once(':').unwrap_or(("", ""));
    let method = if f.method.is_empty() {
        "GET"
    } else {
        f.method.as_str()
    };
    let path = if f.path.starts_with('/') {
        f.path.as_str()
    } else {
        "/"
    };
    let key = (!f.key.is_empty()).then_some(f.key.as_str());
    let req = crate::engine::Request::new(method, path, key, 1).stage(
        (!api.is_empty()).then_some(api),
        (!stage.is_empty()).then_some(stage),
    );
    let now = c.engine.clock().now();
    let d = c.engine.explain_in(&snap, &req, now).await;
    pages::explain(
        &session,
        &stages(&snap),
        (&f.stage, &f.method, &f.path),
        Some(&d.explain()),
    )
}

/// The configuration's stages and a runtime plan's, for the plan form's checkboxes.
fn form_stages(snap: &crate::snapshot::Snapshot, f: &plan_form::PlanForm) -> Vec<String> {
    let mut all = stages(snap);
    for s in &f.stages {
        if !all.contains(s) {
            all.push(s.clone());
        }
    }
    all
}

async fn new_plan_form(
    State(c): State<Console>,
    axum::Extension(session): axum::Extension<Session>,
) -> Response {
    if session.role != Role::Admin {
        return pages::error(
            StatusCode::FORBIDDEN,
            "This session may read, not change (a read credential).",
        );
    }
    let f = plan_form::PlanForm {
        quota_period: "DAY".into(),
        ..Default::default()
    };
    plan_form::page(&session, None, &f, &stages(&c.engine.snapshot()), None)
}

/// A plan form's body, read (with its CSRF token checked); the refusal as a page otherwise.
fn plan_form_body(
    session: &Session,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<plan_form::PlanForm, (StatusCode, String)> {
    if body.len() > plan_form::MAX_FORM {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            "The form is larger than a plan form can be (64 KiB).".to_owned(),
        ));
    }
    let f = plan_form::PlanForm::parse(body);
    check_change(session, headers, &f.csrf).map_err(|(status, m)| (status, m.to_owned()))?;
    Ok(f)
}

/// `CreateUsagePlan` from the form; back to the form, with the catalog's own words, when it
/// refuses.
async fn create_plan(
    State(c): State<Console>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let f = match plan_form_body(&session, &headers, &body) {
        Ok(f) => f,
        Err((status, m)) => return pages::error(status, &m),
    };
    let snap = c.engine.snapshot();
    let made = match f.create() {
        Ok(input) => {
            c.engine
                .change(|st, snap, now| ops::create_usage_plan(st, snap, &input, now))
                .await
        }
        Err(e) => return plan_form::page(&session, None, &f, &form_stages(&snap, &f), Some(&e)),
    };
    match made {
        Ok(p) => {
            tracing::info!(plan_id = %p.id, who = %session.who, "console: usage plan created");
            Redirect::to(&format!("/ui/plans/{}", pages::urlencode(&p.id))).into_response()
        }
        Err(e) => plan_form::page(
            &session,
            None,
            &f,
            &form_stages(&snap, &f),
            Some(&e.message),
        ),
    }
}

/// The runtime plan `id` (a file's plan is refused with the catalog's own error).
fn runtime_plan(
    c: &Console,
    id: &str,
) -> Result<crate::catalog::records::UsagePlanRecord, (StatusCode, String)> {
    let snap = c.engine.snapshot();
    let state = c.engine.catalog().read();
    // The control plane's own rule and words (a file's plan: ConflictException naming the file).
    ops::runtime_plan(&state, &snap, id)
        .cloned()
        .map_err(|e| (status_of(&e), e.message))
}

async fn edit_plan_form(
    State(c): State<Console>,
    axum::Extension(session): axum::Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    if session.role != Role::Admin {
        return pages::error(
            StatusCode::FORBIDDEN,
            "This session may read, not change (a read credential).",
        );
    }
    let p = match runtime_plan(&c, &id) {
        Ok(p) => p,
        Err((status, m)) => return pages::error(status, &m),
    };
    let f = plan_form::PlanForm::of(&p);
    plan_form::page(
        &session,
        Some(&id),
        &f,
        &form_stages(&c.engine.snapshot(), &f),
        None,
    )
}

/// `UpdateUsagePlan` with the patch that takes the plan to the form (all of it, or nothing).
async fn edit_plan(
    State(c): State<Console>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let f = match plan_form_body(&session, &headers, &body) {
        Ok(f) => f,
        Err((status, m)) => return pages::error(status, &m),
    };
    let old = match runtime_plan(&c, &id) {
        Ok(p) => p,
        Err((status, m)) => return pages::error(status, &m),
    };
    let snap = c.engine.snapshot();
    let done = match f.patch(&old) {
        Ok(patch) => c
            .engine
            .change(|st, snap, now| ops::update_usage_plan(st, snap, &id, &patch, now))
            .await
            .map_err(|e| e.message),
        Err(e) => Err(e),
    };
    match done {
        Ok(_) => {
            tracing::info!(plan_id = %id, who = %session.who, "console: usage plan changed");
            Redirect::to(&format!("/ui/plans/{}", pages::urlencode(&id))).into_response()
        }
        Err(e) => plan_form::page(&session, Some(&id), &f, &form_stages(&snap, &f), Some(&e)),
    }
}

async fn delete_plan(
    State(c): State<Console>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err((status, message)) = check_change(&session, &headers, &f.csrf) {
        return pages::error(status, message);
    }
    match c
        .engine
        .change(|st, snap, _| ops::delete_usage_plan(st, snap, &id))
        .await
    {
        Ok(()) => {
            tracing::info!(plan_id = %id, who = %session.who, "console: usage plan deleted");
            Redirect::to("/ui/plans").into_response()
        }
        Err(e) => catalog_error(e),
    }
}

#[derive(serde::Deserialize)]
struct UsageForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    plan: String,
    /// What remains of this period after the change (the plan's limit: a reset).
    #[serde(default)]
    remaining: String,
}

/// AWS's UpdateUsage for one key in one plan: what remains of the current period (the limit:
/// a reset). File keys too: their counters are the store's.
async fn set_usage(
    State(c): State<Console>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<UsageForm>,
) -> Response {
    if let Err((status, message)) = check_change(&session, &headers, &f.csrf) {
        return pages::error(status, message);
    }
    let Ok(remaining) = f.remaining.trim().parse::<u64>() else {
        return pages::error(
            StatusCode::BAD_REQUEST,
            &format!("`{}` is not a number of requests", f.remaining),
        );
    };
    let now = c.engine.clock().now();
    match crate::usage::update(&c.engine, &f.plan, &id, remaining, now).await {
        Ok(_) => {
            tracing::info!(key_id = %id, plan = %f.plan, remaining, who = %session.who, "console: usage set");
            Redirect::to(&format!("/ui/keys/{}", pages::urlencode(&id))).into_response()
        }
        Err(e) => pages::error(usage_status(&e), &e.to_string()),
    }
}

fn usage_status(e: &crate::usage::UsageError) -> StatusCode {
    use crate::usage::UsageError as E;
    match e {
        E::UnknownPlan(_) | E::UnknownKey(_) => StatusCode::NOT_FOUND,
        E::BadRequest(_) | E::KeyNotInPlan { .. } | E::NoQuota(_) => StatusCode::BAD_REQUEST,
        E::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}
