//! `plangate keys …` and `plangate plans …`: the runtime catalog of a running plangate, through
//! its management API (the same operations as AWS's CLI against the REST face). Every answer
//! is printed as JSON, one object per line.

use std::process::ExitCode;

use plangate::management::pb;
use serde_json::{Value, json};

use super::admin::{Admin, AdminArgs, status};
use super::error::CliError;
use super::out::Out;
use super::runtime;

#[derive(clap::Args)]
pub struct KeysArgs {
    #[command(flatten)]
    admin: AdminArgs,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(clap::Subcommand)]
enum KeysCommand {
    /// Create a key; prints it with its value — shown this once, never again. Enabled unless
    /// --disabled (AWS's CreateApiKey defaults to disabled; this command does not).
    Create {
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        customer_id: Option<String>,
        /// The key's value (20 to 128 characters); default: 40 random characters.
        #[arg(long, env = "PLANGATE_KEY_VALUE", hide_env_values = true)]
        value: Option<String>,
        #[arg(long)]
        disabled: bool,
        /// Add the new key to these usage plans.
        #[arg(long = "plan")]
        plans: Vec<String>,
    },
    /// List keys (the file's and the runtime catalog's), by id.
    List {
        /// Only keys whose name starts with this.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        customer_id: Option<String>,
    },
    /// Show one key.
    Get { id: String },
    /// Let a key in again.
    Enable { id: String },
    /// Refuse a key (403) on every replica, keeping it and its counts.
    Disable { id: String },
    /// Delete a key and its places in plans.
    Delete { id: String },
}

#[derive(clap::Args)]
pub struct PlansArgs {
    #[command(flatten)]
    admin: AdminArgs,
    #[command(subcommand)]
    command: PlansCommand,
}

#[derive(clap::Subcommand)]
enum PlansCommand {
    /// Create a usage plan on API stages of the configuration.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// An API stage, `api:stage` (repeatable).
        #[arg(long = "stage", required = true)]
        stages: Vec<String>,
        /// The plan's throttle: requests per second …
        #[arg(long)]
        rate: Option<f64>,
        /// … and burst.
        #[arg(long)]
        burst: Option<i64>,
        /// The plan's quota: requests per period …
        #[arg(long)]
        quota: Option<i64>,
        /// … DAY, WEEK or MONTH …
        #[arg(long, default_value = "MONTH")]
        period: String,
        /// … less this many in the first period.
        #[arg(long, default_value_t = 0)]
        offset: i64,
    },
    /// List usage plans (the file's and the runtime catalog's), by id.
    List {
        /// Only the plans of this key.
        #[arg(long)]
        key_id: Option<String>,
    },
    /// Show one plan.
    Get { id: String },
    /// Change a plan with AWS's patch operations: `--set /throttle/rateLimit=5`,
    /// `--add-stage api:stage`, `--remove-stage api:stage`, `--remove /quota`.
    Update {
        id: String,
        #[arg(long = "set")]
        set: Vec<String>,
        #[arg(long = "add-stage")]
        add_stages: Vec<String>,
        #[arg(long = "remove-stage")]
        remove_stages: Vec<String>,
        #[arg(long = "remove")]
        remove: Vec<String>,
    },
    /// Delete a plan (its keys stay).
    Delete { id: String },
    /// The keys of a plan.
    Keys { id: String },
    /// Add a key to a plan.
    AddKey { plan: String, key: String },
    /// Take a key out of a plan.
    RemoveKey { plan: String, key: String },
}

fn key_json(k: &pb::ApiKey) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "description": k.description,
        "customerId": k.customer_id,
        "enabled": k.enabled,
        "usagePlanIds": k.usage_plan_ids,
        "source": pb::Source::try_from(k.source).map_or("", |s| s.as_str_name()),
        "createdDate": k.created_date.as_ref().map(|t| t.seconds),
    })
}

fn throttle_json(t: &pb::ThrottleSettings) -> Value {
    json!({ "rateLimit": t.rate_limit, "burstLimit": t.burst_limit })
}

fn plan_json(p: &pb::UsagePlan) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "apiStages": p.api_stages.iter().map(|s| json!({
            "apiId": s.api_id,
            "stage": s.stage,
            "throttle": s.throttle.iter().map(|(m, t)| (m.clone(), throttle_json(t))).collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
        "throttle": p.throttle.as_ref().map(throttle_json),
        "quota": p.quota.as_ref().map(|q| json!({ "limit": q.limit, "offset": q.offset, "period": q.period })),
        "source": pb::Source::try_from(p.source).map_or("", |s| s.as_str_name()),
    })
}

fn patch(op: &str, path: &str, value: &str) -> pb::PatchOperation {
    pb::PatchOperation {
        op: op.to_owned(),
        path: path.to_owned(),
        value: value.to_owned(),
    }
}

/// Runs `plangate keys …`.
pub fn run_keys(a: KeysArgs) -> Result<ExitCode, CliError> {
    runtime::current_thread()?.block_on(async {
        let mut admin = a.admin.connect().await?;
        let mut out = Out::stdout();
        keys(&mut admin, a.command, &mut out).await?;
        Ok(ExitCode::SUCCESS)
    })
}

async fn keys(admin: &mut Admin, c: KeysCommand, out: &mut Out) -> Result<(), CliError> {
    let enabled = |id: &str, on: bool| pb::UpdateApiKeyRequest {
        id: id.to_owned(),
        patch_operations: vec![patch(
            "replace",
            "/enabled",
            if on { "true" } else { "false" },
        )],
    };
    match c {
        KeysCommand::Create {
            name,
            description,
            customer_id,
            value,
            disabled,
            plans,
        } => {
            let req = admin.request(pb::CreateApiKeyRequest {
                name: name.unwrap_or_default(),
                description: description.unwrap_or_default(),
                enabled: !disabled,
                value: value.unwrap_or_default(),
                customer_id: customer_id.unwrap_or_default(),
                tags: Default::default(),
            });
            let made = admin
                .client()
                .create_api_key(req)
                .await
                .map_err(status)?
                .into_inner();
            let key = made.api_key.unwrap_or_default();
            for plan in &plans {
                let req = admin.request(pb::CreateUsagePlanKeyRequest {
                    usage_plan_id: plan.clone(),
                    key_id: key.id.clone(),
                });
                admin
                    .client()
                    .create_usage_plan_key(req)
                    .await
                    .map_err(status)?;
            }
            let mut v = key_json(&key);
            v["usagePlanIds"] = json!(plans);
            v["value"] = json!(made.value);
            out.line(v);
        }
        KeysCommand::List { name, customer_id } => {
            let mut token = String::new();
            loop {
                let req = admin.request(pb::ListApiKeysRequest {
                    page_size: 500,
                    page_token: token.clone(),
                    name_query: name.clone().unwrap_or_default(),
                    customer_id: customer_id.clone().unwrap_or_default(),
                });
                let page = admin
                    .client()
                    .list_api_keys(req)
                    .await
                    .map_err(status)?
                    .into_inner();
                for k in &page.api_keys {
                    out.line(key_json(k));
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
        KeysCommand::Get { id } => {
            let req = admin.request(pb::GetApiKeyRequest { id });
            let k = admin.client().get_api_key(req).await.map_err(status)?;
            out.line(key_json(k.get_ref()));
        }
        KeysCommand::Enable { id } => {
            let req = admin.request(enabled(&id, true));
            let k = admin.client().update_api_key(req).await.map_err(status)?;
            out.line(key_json(k.get_ref()));
        }
        KeysCommand::Disable { id } => {
            let req = admin.request(enabled(&id, false));
            let k = admin.client().update_api_key(req).await.map_err(status)?;
            out.line(key_json(k.get_ref()));
        }
        KeysCommand::Delete { id } => {
            let req = admin.request(pb::DeleteApiKeyRequest { id: id.clone() });
            admin.client().delete_api_key(req).await.map_err(status)?;
            out.line(json!({ "deleted": id }));
        }
    }
    Ok(())
}

/// Runs `plangate plans …`.
pub fn run_plans(a: PlansArgs) -> Result<ExitCode, CliError> {
    runtime::current_thread()?.block_on(async {
        let mut admin = a.admin.connect().await?;
        let mut out = Out::stdout();
        plans(&mut admin, a.command, &mut out).await?;
        Ok(ExitCode::SUCCESS)
    })
}

fn stage(s: &str) -> Result<pb::ApiStage, CliError> {
    let (api, stage) = s.split_once(':').ok_or_else(|| CliError::Flag {
        flag: "--stage",
        reason: format!("`{s}`: give `api:stage`"),
    })?;
    Ok(pb::ApiStage {
        api_id: api.to_owned(),
        stage: stage.to_owned(),
        throttle: Default::default(),
    })
}

async fn plans(admin: &mut Admin, c: PlansCommand, out: &mut Out) -> Result<(), CliError> {
    match c {
        PlansCommand::Create {
            name,
            description,
            stages,
            rate,
            burst,
            quota,
            period,
            offset,
        } => {
            let req = admin.request(pb::CreateUsagePlanRequest {
                name,
                description: description.unwrap_or_default(),
                api_stages: stages.iter().map(|s| stage(s)).collect::<Result<_, _>>()?,
                throttle: (rate.is_some() || burst.is_some()).then_some(pb::ThrottleSettings {
                    rate_limit: rate,
                    burst_limit: burst,
                }),
                quota: quota.map(|limit| pb::QuotaSettings {
                    limit,
                    offset,
                    period,
                }),
                tags: Default::default(),
            });
            let p = admin
                .client()
                .create_usage_plan(req)
                .await
                .map_err(status)?;
            out.line(plan_json(p.get_ref()));
        }
        PlansCommand::List { key_id } => {
            let mut token = String::new();
            loop {
                let req = admin.request(pb::ListUsagePlansRequest {
                    page_size: 500,
                    page_token: token.clone(),
                    key_id: key_id.clone().unwrap_or_default(),
                });
                let page = admin
                    .client()
                    .list_usage_plans(req)
                    .await
                    .map_err(status)?
                    .into_inner();
                for p in &page.usage_plans {
                    out.line(plan_json(p));
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
        PlansCommand::Get { id } => {
            let req = admin.request(pb::GetUsagePlanRequest { id });
            let p = admin.client().get_usage_plan(req).await.map_err(status)?;
            out.line(plan_json(p.get_ref()));
        }
        PlansCommand::Update {
            id,
            set,
            add_stages,
            remove_stages,
            remove,
        } => {
            let mut ops = Vec::new();
            for s in &set {
                let (path, value) = s.split_once('=').ok_or_else(|| CliError::Flag {
                    flag: "--set",
                    reason: format!("`{s}`: give `/path=value`"),
                })?;
                ops.push(patch("replace", path, value));
            }
            ops.extend(add_stages.iter().map(|s| patch("add", "/apiStages", s)));
            ops.extend(
                remove_stages
                    .iter()
                    .map(|s| patch("remove", "/apiStages", s)),
            );
            ops.extend(remove.iter().map(|p| patch("remove", p, "")));
            let req = admin.request(pb::UpdateUsagePlanRequest {
                id,
                patch_operations: ops,
            });
            let p = admin
                .client()
                .update_usage_plan(req)
                .await
                .map_err(status)?;
            out.line(plan_json(p.get_ref()));
        }
        PlansCommand::Delete { id } => {
            let req = admin.request(pb::DeleteUsagePlanRequest { id: id.clone() });
            admin
                .client()
                .delete_usage_plan(req)
                .await
                .map_err(status)?;
            out.line(json!({ "deleted": id }));
        }
        PlansCommand::Keys { id } => {
            let mut token = String::new();
            loop {
                let req = admin.request(pb::ListUsagePlanKeysRequest {
                    usage_plan_id: id.clone(),
                    page_size: 500,
                    page_token: token.clone(),
                    name_query: String::new(),
                });
                let page = admin
                    .client()
                    .list_usage_plan_keys(req)
                    .await
                    .map_err(status)?
                    .into_inner();
                for k in &page.keys {
                    out.line(json!({ "id": k.id, "name": k.name }));
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
        PlansCommand::AddKey { plan, key } => {
            let req = admin.request(pb::CreateUsagePlanKeyRequest {
                usage_plan_id: plan.clone(),
                key_id: key,
            });
            let k = admin
                .client()
                .create_usage_plan_key(req)
                .await
                .map_err(status)?
                .into_inner();
            out.line(json!({ "usagePlanId": plan, "id": k.id, "name": k.name }));
        }
        PlansCommand::RemoveKey { plan, key } => {
            let req = admin.request(pb::DeleteUsagePlanKeyRequest {
                usage_plan_id: plan.clone(),
                key_id: key.clone(),
            });
            admin
                .client()
                .delete_usage_plan_key(req)
                .await
                .map_err(status)?;
            out.line(json!({ "usagePlanId": plan, "removed": key }));
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// Write the file here instead of standard output.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

/// Runs `plangate export`.
pub fn run_export(a: ExportArgs) -> Result<ExitCode, CliError> {
    let yaml = runtime::current_thread()?.block_on(async {
        let mut admin = a.admin.connect().await?;
        let req = admin.request(pb::ExportRequest {});
        let r = admin.client().export(req).await.map_err(status)?;
        Ok::<_, CliError>(r.into_inner().yaml)
    })?;
    match &a.out {
        Some(path) => std::fs::write(path, yaml).map_err(|source| CliError::Write {
            path: path.clone(),
            source,
        })?,
        None => Out::stdout().text(yaml),
    }
    Ok(ExitCode::SUCCESS)
}
