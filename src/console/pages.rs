//! The console's pages, rendered by maud: every value interpolated is HTML-escaped (names,
//! descriptions and customer ids are the callers' text).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::session::{Role, Session};
use crate::catalog::State;
use crate::catalog::records::{ApiKeyRecord, UsagePlanRecord};
use crate::catalog::views::{PlanKey, Source};
use crate::snapshot::Snapshot;

pub fn page(status: StatusCode, title: &str, session: Option<&Session>, body: Markup) -> Response {
    page_with(status, title, session, None, body)
}

/// Where a page's assets are served and what its header holds: the console's (under `/ui/`,
/// with its navigation when signed in) or the consumer page's (under `/`).
struct Shell<'a> {
    assets: &'static str,
    title_suffix: &'static str,
    header: Markup,
    script: Option<&'a str>,
}

fn render(status: StatusCode, title: &str, shell: Shell<'_>, body: Markup) -> Response {
    let assets = shell.assets;
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                link rel="icon" href={ (assets) "favicon.svg" } type="image/svg+xml";
                @if let Some(src) = shell.script { script src=(src) defer {} }
                title { (title) (shell.title_suffix) }
                link rel="stylesheet" href={ (assets) "console.css" };
            }
            body {
                header { (shell.header) }
                main { h1 { (title) } (body) }
            }
        }
    };
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

fn page_with(
    status: StatusCode,
    title: &str,
    session: Option<&Session>,
    script: Option<&str>,
    body: Markup,
) -> Response {
    let header = html! {
        a.brand href="/ui/" { "plangate" }
        @if let Some(s) = session {
            nav aria-label="Main" {
                a href="/ui/" { "Overview" }
                a href="/ui/keys" { "Keys" }
                a href="/ui/live" { "Live" }
                a href="/ui/usage" { "Usage" }
                a href="/ui/explain" { "Explain" }
                a href="/ui/plans" { "Plans" }
            }
            form.signout method="post" action="/ui/signout" {
                input type="hidden" name="csrf" value=(s.csrf);
                span.who { (s.who) @if s.role == Role::Read { " (read only)" } }
                button type="submit" { "Sign out" }
            }
        }
    };
    let shell = Shell {
        assets: "/ui/assets/",
        title_suffix: " — plangate",
        header,
        script,
    };
    render(status, title, shell, body)
}

/// A page of the consumer usage page's listener: no console navigation, its own asset path.
pub fn consumer_page(status: StatusCode, title: &str, body: Markup) -> Response {
    let shell = Shell {
        assets: "/assets/",
        title_suffix: "",
        header: html! { a.brand href="/" { "API usage" } },
        script: None,
    };
    render(status, title, shell, body)
}

pub fn error(status: StatusCode, message: &str) -> Response {
    page(
        status,
        "Error",
        None,
        html! { p.error role="alert" { (message) } p { a href="/ui/" { "Back to the console" } } },
    )
}

fn sign_in_form(message: Option<&str>) -> Markup {
    html! {
        @if let Some(m) = message { p.error role="alert" { (m) } }
        form method="post" action="/ui/signin" {
            fieldset {
                legend { "With the admin token" }
                label for="token" { "Admin token" }
                input #token type="password" name="token" autocomplete="current-password";
            }
            fieldset {
                legend { "Or with an access key of the control plane" }
                label for="akid" { "Access key id" }
                input #akid type="text" name="access_key_id" autocomplete="username";
                label for="secret" { "Secret access key" }
                input #secret type="password" name="secret_access_key" autocomplete="current-password";
            }
            button type="submit" { "Sign in" }
        }
    }
}

pub fn sign_in(message: Option<&str>) -> Response {
    page(StatusCode::OK, "Sign in", None, sign_in_form(message))
}

pub fn sign_in_status(status: StatusCode, message: &str) -> Response {
    page(status, "Sign in", None, sign_in_form(Some(message)))
}

/// What the overview shows beyond the configuration and the catalog.
pub struct OverviewFigures {
    /// Decisions per second over the last minute of views (`None`: not yet known).
    pub rate: Option<f64>,
    /// Decisions since start by (outcome, limit that refused).
    pub counts: Vec<(String, String, u64)>,
    /// The keys nearest their quota (`None`: no watcher free for the collector).
    pub nearest: Option<Vec<super::live::Near>>,
    pub fingerprint: i64,
}

pub fn overview(
    session: &Session,
    snap: &Snapshot,
    state: &State,
    store_error: Option<String>,
    f: &OverviewFigures,
) -> Response {
    let total: u64 = f.counts.iter().map(|c| c.2).sum();
    let mut by_outcome: std::collections::BTreeMap<&str, u64> = Default::default();
    let mut by_limit: std::collections::BTreeMap<&str, u64> = Default::default();
    for (outcome, limit, n) in &f.counts {
        *by_outcome.entry(outcome.as_str()).or_default() += n;
        if !limit.is_empty() {
            *by_limit.entry(limit.as_str()).or_default() += n;
        }
    }
    let body = html! {
        p {
            span #live-status role="status" { "" }
            " "
            button #pause type="button" aria-pressed="false" hidden { "Pause" }
            " "
            a href="/ui/" { "Refresh" }
        }
        div #overview-live data-live {
            dl.facts {
                dt { "Decisions per second" } dd { @match f.rate { Some(r) => { (format!("{r:.1}")) " (over the last minute of this page's views)" }, None => "measuring: shown from the next refresh" } }
                dt { "Decisions since start" } dd { (total) }
                dt { "Configuration" } dd { "generation " (snap.generation) ", fingerprint " code { (format!("{:012x}", f.fingerprint)) } " (the first 12 hex digits of its SHA-256)" @if !snap.source.is_empty() { ", from " code { (snap.source) } } }
                dt { "Keys" } dd { (snap.keys.len()) " in the file, " (state.keys.len()) " made at runtime" }
                dt { "Usage plans" } dd { (snap.plans.len()) " in the file, " (state.plans.len()) " made at runtime" }
                dt { "Runtime catalog" } dd { "write " (state.head) }
                dt { "Counter store" } dd {
                    @match &store_error { None => span.ok { "answering" }, Some(e) => span.error { "failing: " (e) } }
                }
            }
            div.columns {
                table {
                    caption { "Decisions since start, by outcome" }
                    thead { tr { th scope="col" { "Outcome" } th scope="col" { "Decisions" } } }
                    tbody { @for (o, n) in &by_outcome { tr { td { (o) } td { (n) } } } }
                }
                table {
                    caption { "Refusals since start, by the limit that refused" }
                    thead { tr { th scope="col" { "Limit" } th scope="col" { "Refusals" } } }
                    tbody { @for (l, n) in &by_limit { tr { td { (l) } td { (n) } } } }
                }
            }
            @match &f.nearest {
                None => p { "The keys nearest their quota are not shown: every decision watcher is taken (--max-watchers)." },
                Some(near) => {
                    table {
                        caption { "Keys nearest their quota (among the keys that made requests while the console was open)" }
                        thead { tr { th scope="col" { "Key" } th scope="col" { "Plan" } th scope="col" { "Remaining" } th scope="col" { "Resets" } } }
                        tbody {
                            @for n in near {
                                tr {
                                    td { a href={ "/ui/keys/" (urlencode(&n.key)) } { code { (n.key) } } }
                                    td { (n.plan) }
                                    td { (n.remaining) " of " (n.limit) }
                                    td { (when(n.resets)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page_with(
        StatusCode::OK,
        "Overview",
        Some(session),
        Some("/ui/assets/live.js"),
        body,
    )
}

fn plan_names<'a>(
    state: &'a State,
    snap_plans: &'a [UsagePlanRecord],
    key: &ApiKeyRecord,
) -> Vec<&'a str> {
    if key.created_date == 0 {
        // A file key: its plans are listed by the plans page.
        return Vec::new();
    }
    state
        .plans_of(&key.id)
        .map(|id| {
            snap_plans
                .iter()
                .find(|p| p.id == id)
                .map_or(id, |p| p.name.as_str())
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
pub fn keys(
    session: &Session,
    list: &[ApiKeyRecord],
    next: Option<&str>,
    q: &str,
    customer: &str,
    plans: &[UsagePlanRecord],
    state: &State,
) -> Response {
    let admin = session.role == Role::Admin;
    let body = html! {
        form.search method="get" action="/ui/keys" role="search" {
            label for="q" { "Name (prefix) or id" }
            input #q type="search" name="q" value=(q);
            label for="customer" { "Customer id" }
            input #customer type="search" name="customer" value=(customer);
            button type="submit" { "Search" }
        }
        @if admin {
            details.create {
                summary { "Create a key" }
                form method="post" action="/ui/keys" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    label for="name" { "Name" }
                    input #name type="text" name="name" maxlength="1024";
                    label for="customer_id" { "Customer id" }
                    input #customer_id type="text" name="customer_id" maxlength="1024";
                    label for="plan" { "Usage plan" }
                    select #plan name="plan" {
                        option value="" { "(none)" }
                        @for p in plans { option value=(p.id) { (p.name) " (" (p.id) ")" } }
                    }
                    button type="submit" { "Create" }
                }
            }
        }
        table {
            caption { "API keys" }
            thead { tr { th scope="col" { "Id" } th scope="col" { "Name" } th scope="col" { "Customer" } th scope="col" { "State" } th scope="col" { "Plans" } @if admin { th scope="col" { "Actions" } } } }
            tbody {
                @for k in list {
                    tr {
                        td { a href={ "/ui/keys/" (urlencode(&k.id)) } { code { (k.id) } } }
                        td { (k.name.as_deref().unwrap_or("")) }
                        td { (k.customer_id.as_deref().unwrap_or("")) }
                        td { @if k.enabled { "enabled" } @else { "disabled" } }
                        td { (plan_names(state, plans, k).join(", ")) }
                        @if admin {
                            td.actions {
                                @if k.created_date == 0 {
                                    span { "defined in the file" }
                                } @else {
                                    @let action = if k.enabled { "disable" } else { "enable" };
                                    form method="post" action={ "/ui/keys/" (k.id) "/" (action) } {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        button type="submit" aria-label={ (action) " key " (k.id) } { (action) }
                                    }
                                    form method="post" action={ "/ui/keys/" (k.id) "/delete" } {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        button.danger type="submit" aria-label={ "delete key " (k.id) } { "delete" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(n) = next {
            p { a href={ "/ui/keys?q=" (urlencode(q)) "&customer=" (urlencode(customer)) "&position=" (urlencode(n)) } { "Next page" } }
        }
    };
    page(StatusCode::OK, "Keys", Some(session), body)
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn key_created(session: &Session, k: &ApiKeyRecord, value: &str, plan: &str) -> Response {
    let body = html! {
        p { "Key " code { (k.id) } @if let Some(n) = &k.name { " (" (n) ")" } " was created"
            @if !plan.is_empty() { " in plan " code { (plan) } } "." }
        p.warning role="alert" { "Its value is shown this once: plangate keeps only its SHA-256. Copy it now." }
        label for="value" { "Value" }
        input #value type="text" readonly value=(value) size="48";
        " "
        button #copy type="button" hidden { "Copy" }
        " "
        span #copy-status role="status" { "" }
        p { a href="/ui/keys" { "Back to the keys" } }
    };
    page_with(
        StatusCode::CREATED,
        "Key created",
        Some(session),
        Some("/ui/assets/copy.js"),
        body,
    )
}

pub fn plans(session: &Session, list: &[UsagePlanRecord], state: &State) -> Response {
    let body = html! {
        @if session.role == Role::Admin { p { a href="/ui/new-plan" { "Create a usage plan" } } }
        table {
            caption { "Usage plans" }
            thead { tr { th scope="col" { "Id" } th scope="col" { "Name" } th scope="col" { "Stages" } th scope="col" { "Throttle" } th scope="col" { "Quota" } th scope="col" { "Source" } } }
            tbody {
                @for p in list {
                    tr {
                        td { a href={ "/ui/plans/" (urlencode(&p.id)) } { code { (p.id) } } }
                        td { (p.name) }
                        td { @for s in &p.api_stages { (s.api_id) ":" (s.stage) " " } }
                        td { @if let Some(t) = &p.throttle { (t.rate_limit.unwrap_or(0.0)) "/s, burst " (t.burst_limit.unwrap_or(0)) } }
                        td { @if let Some(q) = &p.quota { (q.limit) " per " (q.period) } }
                        td { @if state.plans.contains_key(&p.id) { "runtime" } @else { "file" } }
                    }
                }
            }
        }
    };
    page(StatusCode::OK, "Usage plans", Some(session), body)
}

/// A plan's daily requests, summed over its keys (or the first of them, `partial`).
pub struct PlanDaily {
    pub start: chrono::NaiveDate,
    pub days: Vec<(u64, Option<u64>)>,
    pub partial: bool,
}

pub fn plan(
    session: &Session,
    p: &UsagePlanRecord,
    source: Source,
    keys: &[PlanKey],
    file: &str,
    daily: Option<&PlanDaily>,
) -> Response {
    let admin = session.role == Role::Admin && source == Source::Runtime;
    let body = html! {
        @if admin {
            div.actions {
                a href={ "/ui/plans/" (urlencode(&p.id)) "/edit" } { "Edit this plan" }
                form method="post" action={ "/ui/plans/" (urlencode(&p.id)) "/delete" } {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button.danger type="submit" { "Delete this plan" }
                }
            }
        }
        dl.facts {
            dt { "Id" } dd { code { (p.id) } }
            dt { "Name" } dd { (p.name) }
            @if let Some(d) = &p.description { dt { "Description" } dd { (d) } }
            dt { "Source" } dd { @match source { Source::File => { "the configuration file " code { (file) } " (read-only here)" }, Source::Runtime => "the runtime catalog" } }
            dt { "Throttle" } dd { @if let Some(t) = &p.throttle { (t.rate_limit.unwrap_or(0.0)) " requests/s, burst " (t.burst_limit.unwrap_or(0)) } @else { "none" } }
            dt { "Quota" } dd { @if let Some(q) = &p.quota { (q.limit) " per " (q.period) @if q.offset > 0 { ", less " (q.offset) " in the first period" } } @else { "none" } }
        }
        h2 { "API stages" }
        ul {
            @for s in &p.api_stages {
                li { (s.api_id) ":" (s.stage)
                    @if !s.throttle.is_empty() {
                        ul { @for (m, t) in &s.throttle { li { code { (m) } ": " (t.rate_limit.unwrap_or(0.0)) "/s, burst " (t.burst_limit.unwrap_or(0)) } } }
                    }
                }
            }
        }
        @if let Some(d) = daily {
            h2 { "Requests per day from " (d.start) @if d.partial { " (of the keys listed below; the Usage page has every key)" } }
            (chart(&d.days))
            p { (d.days.iter().map(|x| x.0).sum::<u64>()) " requests in " (d.days.len()) " days." }
        }
        h2 { "Keys (first 100)" }
        ul { @for k in keys { li { a href={ "/ui/keys/" (urlencode(&k.id)) } { code { (k.id) } } @if let Some(n) = &k.name { " " (n) } } } }
    };
    page(
        StatusCode::OK,
        &format!("Plan {}", p.name),
        Some(session),
        body,
    )
}

/// A plan's id and a key's `[used, remaining]` per day in it.
pub type PlanUsage = (String, Vec<(u64, Option<u64>)>);

/// A bar chart of daily usage, as inline SVG (no script; the numbers are in the table too).
pub fn chart(days: &[(u64, Option<u64>)]) -> Markup {
    let max = days.iter().map(|d| d.0).max().unwrap_or(0).max(1);
    let (w, h, bar) = (days.len() as u64 * 12, 80u64, 10u64);
    html! {
        svg width=(w) height=(h) viewBox={ "0 0 " (w) " " (h) } role="img" aria-label="Requests per day, oldest first" {
            @for (i, (used, _)) in days.iter().enumerate() {
                @let bh = used * (h - 2) / max;
                rect x=(i as u64 * 12) y=(h - bh) width=(bar) height=(bh) fill="#0b4fa8" {
                    title { (used) }
                }
            }
        }
    }
}

pub fn key(
    session: &Session,
    k: &ApiKeyRecord,
    source: Source,
    all_plans: &[UsagePlanRecord],
    usage: &[PlanUsage],
    start: chrono::NaiveDate,
) -> Response {
    let admin = session.role == Role::Admin && source == Source::Runtime;
    let member: Vec<&str> = usage.iter().map(|(p, _)| p.as_str()).collect();
    let body = html! {
        dl.facts {
            dt { "Id" } dd { code { (k.id) } }
            dt { "Name" } dd { (k.name.as_deref().unwrap_or("")) }
            dt { "Customer" } dd { (k.customer_id.as_deref().unwrap_or("")) }
            dt { "State" } dd { @if k.enabled { "enabled" } @else { "disabled" } }
            dt { "Source" } dd { @match source { Source::File => "the configuration file (read-only here)", Source::Runtime => "the runtime catalog" } }
        }
        @if admin {
            @let action = if k.enabled { "disable" } else { "enable" };
            form method="post" action={ "/ui/keys/" (urlencode(&k.id)) "/" (action) } {
                input type="hidden" name="csrf" value=(session.csrf);
                button type="submit" { (action) " this key" }
            }
            @let others: Vec<&UsagePlanRecord> = all_plans.iter().filter(|p| !member.contains(&p.id.as_str())).collect();
            @if !others.is_empty() {
                form method="post" action={ "/ui/keys/" (urlencode(&k.id)) "/add-plan" } {
                    input type="hidden" name="csrf" value=(session.csrf);
                    label for="plan" { "Add to usage plan" }
                    select #plan name="plan" {
                        @for p in others { option value=(p.id) { (p.name) " (" (p.id) ")" } }
                    }
                    button type="submit" { "Add" }
                }
            }
        }
        h2 { "Usage, last " (usage.first().map_or(0, |u| u.1.len())) " days from " (start) }
        @if usage.is_empty() { p { "In no usage plan." } }
        @for (plan, days) in usage {
            section aria-label={ "Usage in plan " (plan) } {
                h3 { "Plan " code { (plan) } }
                @if admin {
                    form method="post" action={ "/ui/keys/" (urlencode(&k.id)) "/remove-plan" } {
                        input type="hidden" name="csrf" value=(session.csrf);
                        input type="hidden" name="plan" value=(plan);
                        button.danger type="submit" { "Remove from this plan" }
                    }
                }
                @if session.role == Role::Admin && days.last().is_some_and(|d| d.1.is_some()) {
                    form.inline method="post" action={ "/ui/keys/" (urlencode(&k.id)) "/usage" } {
                        input type="hidden" name="csrf" value=(session.csrf);
                        input type="hidden" name="plan" value=(plan);
                        @let id = format!("remaining-{plan}");
                        label for=(id) { "Requests remaining in this quota period (the limit: a reset)" }
                        input id=(id) type="text" inputmode="numeric" name="remaining" value=(limit_of(all_plans, plan).map(|l| l.to_string()).unwrap_or_default());
                        button type="submit" { "Set remaining" }
                    }
                }
                (chart(days))
                table {
                    caption { "Requests per day in plan " (plan) }
                    thead { tr { th scope="col" { "Day" } th scope="col" { "Used" } th scope="col" { "Remaining" } } }
                    tbody {
                        @for (i, (used, remaining)) in days.iter().enumerate() {
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
    };
    page(
        StatusCode::OK,
        &format!("Key {}", k.id),
        Some(session),
        body,
    )
}

/// The quota limit of plan `id`, if it has one.
fn limit_of(plans: &[UsagePlanRecord], id: &str) -> Option<i64> {
    plans
        .iter()
        .find(|p| p.id == id)?
        .quota
        .as_ref()
        .map(|q| q.limit)
}

fn when(t: crate::clock::Nanos) -> String {
    crate::clock::format_rfc3339(t)
}

pub fn live(
    session: &Session,
    shown: &[std::sync::Arc<crate::metrics::Watched>],
    key: &str,
    outcome: &str,
    stage: &str,
    lost: u64,
) -> Response {
    let query = format!(
        "key={}&outcome={}&stage={}",
        urlencode(key),
        urlencode(outcome),
        urlencode(stage)
    );
    let body = html! {
        form.search method="get" action="/ui/live" role="search" {
            label for="key" { "Key id" }
            input #key type="search" name="key" value=(key);
            label for="outcome" { "Outcome" }
            select #outcome name="outcome" {
                option value="" { "any" }
                @for o in ["admitted", "forbidden", "missing_authentication_token", "throttled", "quota_exceeded", "unavailable"] {
                    option value=(o) selected[o == outcome] { (o) }
                }
            }
            label for="stage" { "API:stage" }
            input #stage type="search" name="stage" value=(stage);
            button type="submit" { "Filter" }
        }
        p {
            span #live-status role="status" { "" }
            " "
            button #pause type="button" aria-pressed="false" hidden { "Pause" }
            " "
            a href={ "/ui/live?" (query) } { "Refresh" }
            @if lost > 0 { " (" (lost) " decisions were not kept: the page fell behind)" }
        }
        table {
            caption { "The latest decisions, newest first" }
            thead { tr { th scope="col" { "Time" } th scope="col" { "Service" } th scope="col" { "Outcome" } th scope="col" { "Reason" } th scope="col" { "Key" } th scope="col" { "Plan" } th scope="col" { "API:stage" } th scope="col" { "Method" } } }
            tbody #decisions data-live {
                @for w in shown {
                    @let d = &w.decision;
                    tr {
                        td { (when(w.time)) }
                        td { (w.service.as_str()) }
                        td { (d.outcome.as_str()) @if d.shadow { " (shadow)" } }
                        td { (d.reason.map_or("", |r| r.as_str())) }
                        td { @if let Some(k) = &d.key_id { a href={ "/ui/keys/" (urlencode(k)) } { code { (k) } } } }
                        td { (d.plan_id.as_deref().unwrap_or("")) }
                        td { (d.api.as_deref().unwrap_or("")) ":" (d.stage.as_deref().unwrap_or("")) }
                        td { (d.method.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    };
    page_with(
        StatusCode::OK,
        "Live",
        Some(session),
        Some("/ui/assets/live.js"),
        body,
    )
}

#[allow(clippy::too_many_arguments)]
pub fn usage(
    session: &Session,
    plans: &[UsagePlanRecord],
    plan: &str,
    key: &str,
    start: &str,
    end: &str,
    report: Option<(&crate::usage::Report, Option<&str>)>,
    error: Option<&str>,
) -> Response {
    let day0 = chrono::NaiveDate::parse_from_str(start, "%Y-%m-%d").ok();
    let body = html! {
        form.search method="get" action="/ui/usage" {
            label for="uplan" { "Usage plan" }
            select #uplan name="plan" {
                @for p in plans { option value=(p.id) selected[p.id == plan] { (p.name) " (" (p.id) ")" } }
            }
            label for="ukey" { "Key id (empty: every key)" }
            input #ukey type="search" name="key" value=(key);
            label for="ustart" { "From" }
            input #ustart type="date" name="start" value=(start);
            label for="uend" { "To" }
            input #uend type="date" name="end" value=(end);
            button type="submit" { "Show" }
        }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        @if let Some((r, next)) = report {
            p { a href={ "/ui/usage?plan=" (urlencode(plan)) "&key=" (urlencode(key)) "&start=" (urlencode(start)) "&end=" (urlencode(end)) "&format=csv" } { "Download CSV" } " (every key)" }
            @if r.items.is_empty() { p { "No keys in this plan." } }
            @for (k, days) in &r.items {
                section aria-label={ "Usage of key " (k) } {
                    h2 { "Key " a href={ "/ui/keys/" (urlencode(k)) } { code { (k) } } ": " (days.iter().map(|d| d.0).sum::<u64>()) " requests" }
                    (chart(days))
                    table {
                        caption { "Requests per day of key " (k) }
                        thead { tr { th scope="col" { "Day" } th scope="col" { "Used" } th scope="col" { "Remaining" } } }
                        tbody {
                            @for (i, (used, remaining)) in days.iter().enumerate() {
                                tr {
                                    td { @if let Some(d) = day0 { (d + chrono::Days::new(i as u64)) } }
                                    td { (used) }
                                    td { @if let Some(x) = remaining { (x) } @else { "no quota" } }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(n) = next {
                p { a href={ "/ui/usage?plan=" (urlencode(plan)) "&start=" (urlencode(start)) "&end=" (urlencode(end)) "&position=" (urlencode(n)) } { "Next keys" } }
            }
        }
    };
    page(StatusCode::OK, "Usage", Some(session), body)
}

pub fn explain(
    session: &Session,
    stages: &[String],
    (stage, method, path): (&str, &str, &str),
    result: Option<&serde_json::Value>,
) -> Response {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let body = html! {
        form method="post" action="/ui/explain" {
            input type="hidden" name="csrf" value=(session.csrf);
            label for="estage" { "API stage" }
            select #estage name="stage" {
                @for s in stages { option value=(s) selected[s == stage] { (s) } }
            }
            label for="emethod" { "Method" }
            input #emethod type="text" name="method" value=(if method.is_empty() { "GET" } else { method }) maxlength="16";
            label for="epath" { "Path" }
            input #epath type="text" name="path" value=(if path.is_empty() { "/" } else { path }) maxlength="2048";
            label for="ekey" { "API key value (not kept, not shown again)" }
            input #ekey type="password" name="key" autocomplete="off";
            button type="submit" { "Explain" }
        }
        @if let Some(r) = result {
            h2 { "Decision: " (text(&r["outcome"])) }
            dl.facts {
                @for (label, field) in [("Reason", "reason"), ("Decided by", "decided_by"), ("API", "api"), ("Stage", "stage"), ("Method", "method"), ("Key", "key_id"), ("Usage plan", "usage_plan"), ("Customer", "customer_id"), ("Retry after (s)", "retry_after_seconds")] {
                    @if !r[field].is_null() { dt { (label) } dd { (text(&r[field])) } }
                }
            }
            table {
                caption { "Every limit, in AWS's order (nothing charged)" }
                thead { tr { th scope="col" { "Limit" } th scope="col" { "Setting" } th scope="col" { "Admits" } th scope="col" { "Remaining after" } th scope="col" { "Resets in (s)" } } }
                tbody {
                    @for l in r["limits"].as_array().into_iter().flatten() {
                        tr {
                            td { (text(&l["limit"])) }
                            td { @if l["quota"].is_null() { (text(&l["rate"])) "/s, burst " (text(&l["burst"])) } @else { (text(&l["quota"])) " per " (text(&l["period"])) } }
                            td { @if l["admitted"] == true { "yes" } @else { "no" } }
                            td { (text(&l["remaining"])) }
                            td { (text(&l["reset_seconds"])) }
                        }
                    }
                }
            }
        }
    };
    page(StatusCode::OK, "Explain", Some(session), body)
}
