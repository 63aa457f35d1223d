//! The configuration file: TOML, with `SALESPULSE__SECTION__KEY` environment overrides.
//! Unknown keys are errors, so a typo never silently falls back to a default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use salespulse_calls::{CallExport, CallsConfig};
use salespulse_cards::{CardExport, CardsConfig, CommerceConfig, Period, PipelineConfig, StageRule};
use salespulse_core::window::{parse_minutes, ShiftConfig, Windows, WindowsConfig};
use salespulse_engine::{AnomalySettings, EngineConfig, JoinConfig, TopicConfig};
use salespulse_events::{Encoding, Kind};
use salespulse_exporter::{BasicAuth, HttpSecurity};
use salespulse_kafka::{DeadLetterConfig, IngestConfig};
use salespulse_messages::{MessageExport, MessagesConfig, WorkingHours};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where to consume from.
    pub kafka: KafkaSection,
    /// Where to serve metrics.
    #[serde(default)]
    pub http: HttpSection,
    /// Which windows to keep.
    #[serde(default)]
    pub windows: WindowsSection,
    /// Optional families and body reuse of `/metrics`.
    #[serde(default)]
    pub export: MetricsExportSection,
    /// How calls are judged.
    #[serde(default)]
    pub calls: CallsSection,
    /// How messages are joined into dialogs and judged.
    #[serde(default)]
    pub messages: MessagesSection,
    /// How CRM card changes are judged and bounded.
    #[serde(default)]
    pub cards: CardsSection,
    /// Joins across streams.
    #[serde(default)]
    pub joins: JoinsSection,
    /// Baselines and anomaly scores.
    #[serde(default)]
    pub anomalies: AnomaliesSection,
    /// Sales plans: the reloadable plans file and the period.
    #[serde(default)]
    pub plans: PlansSection,
    /// Memory and input bounds.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Logging.
    #[serde(default)]
    pub log: LogSection,
    /// Declarative source mappings for topics of foreign payloads (docs/sources/README.md).
    #[serde(default)]
    pub sources: Option<SourcesSection>,
    /// The webhook gateway (`salespulse gateway`).
    #[serde(default)]
    pub gateway: GatewaySection,
}

/// `[gateway]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    /// Address of `/hooks/<source>`, `/healthz` and `/metrics` of the gateway process.
    pub listen: SocketAddr,
    /// The public base URL vendors call (`https://hooks.example.com`), needed to check
    /// signatures computed over the URL (Twilio); the hook path is appended.
    pub public_url: Option<String>,
    /// Largest body accepted; larger requests get 413.
    pub max_body_bytes: usize,
    /// Requests a second accepted per source, on average; more get 429.
    pub rate_limit_per_second: f64,
    /// Requests a source may send at once above the average rate.
    pub rate_limit_burst: u32,
    /// How long to wait for Kafka to acknowledge a webhook before answering 503 (the vendor retries).
    #[serde(with = "humantime_serde")]
    pub produce_timeout: Duration,
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            listen: SocketAddr::from(([127, 0, 0, 1], 9899)),
            public_url: None,
            max_body_bytes: 256 * 1024,
            rate_limit_per_second: 100.0,
            rate_limit_burst: 200,
            produce_timeout: Duration::from_secs(5),
        }
    }
}

/// `[sources]`. Relative paths are taken from the directory of the configuration file, not
/// from the process's working directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesSection {
    /// The directory of mapping files (`*.toml`), compiled at start-up.
    pub dir: std::path::PathBuf,
    /// The manager directory (CSV `source,key,manager_id[,team]`); without it every event of a
    /// mapped source is attributed to `unattributed`.
    #[serde(default)]
    pub directory: Option<std::path::PathBuf>,
    /// Where remembered previous values (`remember` rules) are kept over a restart: loaded at
    /// start, written every 5 minutes and at shutdown. Without it a restart forgets every
    /// entity whose last change is older than the rebuild's replay.
    #[serde(default)]
    pub memory_snapshot: Option<std::path::PathBuf>,
}

impl SourcesSection {
    /// Makes the relative paths relative to `base` (the configuration file's directory).
    fn resolve(&mut self, base: &Path) {
        let resolve = |path: &mut std::path::PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        resolve(&mut self.dir);
        self.directory.as_mut().map(resolve);
        self.memory_snapshot.as_mut().map(resolve);
    }
}

/// `[kafka]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// `bootstrap.servers`, e.g. `127.0.0.1:9092`.
    pub bootstrap_servers: String,
    /// The consumer group; replicas in one group split the partitions.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// The topics to consume: names, or tables with per-topic decoding settings.
    pub topics: Vec<TopicEntry>,
    /// librdkafka properties passed through as they are (`"session.timeout.ms" = "10000"`), to the
    /// consumer and (all but consumer-only keys) the dead-letter producer. A key ending in `_file`
    /// or `_env` names a file or an environment variable holding the value of the key without the
    /// suffix (`"sasl.password_file" = "/run/secrets/kafka"`), so secrets stay out of the file.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Where rejected records go.
    #[serde(default)]
    pub dead_letter: DeadLetterSection,
    /// Threads that decode and apply records (partition `p` of every topic on thread
    /// `p % apply_threads`, so a partition group keeps one writer); the polling thread hands them
    /// batches. 0 (the default) is one per available core; 1 applies on the polling thread.
    #[serde(default)]
    pub apply_threads: usize,
    /// Niceness added to the apply threads (Linux; 0 to 19): when the cores are busy, `/metrics`
    /// renders, the polling thread and librdkafka go first and apply takes what they leave. An
    /// apply thread busy on a backlog otherwise gets an equal share with a scrape's render, and
    /// the scrape waits. 0 keeps the process's priority.
    #[serde(default = "default_apply_nice")]
    pub apply_nice: i32,
}

fn default_apply_nice() -> i32 {
    salespulse_kafka::DEFAULT_APPLY_NICE
}

/// `[kafka.dead_letter]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterSection {
    /// The dead-letter topic; unset (the default) sends nothing anywhere.
    pub topic: Option<String>,
    /// Dead letters held in memory awaiting delivery; more are dropped (and counted).
    pub queue_capacity: usize,
    /// How long one dead letter is retried before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// librdkafka properties for the dead-letter producer only (after `[kafka.properties]`).
    pub properties: BTreeMap<String, String>,
}

impl Default for DeadLetterSection {
    fn default() -> Self {
        DeadLetterSection {
            topic: None,
            queue_capacity: DeadLetterConfig::DEFAULT_QUEUE_CAPACITY,
            delivery_timeout: DeadLetterConfig::DEFAULT_DELIVERY_TIMEOUT,
            properties: BTreeMap::new(),
        }
    }
}

/// One topic: a bare name, or a table.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TopicEntry {
    /// Just the name: encoding sniffed per record unless a header says it, any kind.
    Name(String),
    /// Name with settings.
    Table(TopicTable),
}

/// `[[kafka.topics]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicTable {
    /// The topic.
    pub name: String,
    /// `auto` (default: sniff the body), `json` or `protobuf`; a `content-type` header wins.
    #[serde(default)]
    pub encoding: EncodingSetting,
    /// `call`, `message`, `card_change`, or `mixed` (default: each record's `kind` field decides).
    #[serde(default)]
    pub kind: KindSetting,
    /// The source mapping (by its `source` name, from `[sources] dir`) that decodes this topic's
    /// raw foreign payloads; `encoding` and `kind` do not apply then.
    #[serde(default)]
    pub mapping: Option<String>,
}

/// The encoding of records without a `content-type` header.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EncodingSetting {
    /// Sniff: `{` starts JSON, anything else is protobuf.
    #[default]
    Auto,
    /// JSON.
    Json,
    /// Protobuf.
    Protobuf,
}

/// The kind of events a topic carries.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KindSetting {
    /// Any kind; the record says which.
    #[default]
    Mixed,
    /// Calls only.
    Call,
    /// Messages only.
    Message,
    /// Card changes only.
    CardChange,
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
    /// Credentials every route but the probes `/healthz` and `/readyz` requires; unset: no auth.
    pub basic_auth: Option<BasicAuthSection>,
    /// Serve HTTPS; unset: plain HTTP.
    pub tls: Option<TlsSection>,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection { listen: SocketAddr::from(([127, 0, 0, 1], 9898)), basic_auth: None, tls: None }
    }
}

/// `[http.basic_auth]`: one user; the password inline, in a file or in an environment variable.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthSection {
    /// The user name.
    pub username: String,
    /// The password itself (prefer `password_file` or `password_env`).
    pub password: Option<String>,
    /// A file holding the password (one trailing newline dropped).
    pub password_file: Option<std::path::PathBuf>,
    /// An environment variable holding the password.
    pub password_env: Option<String>,
}

impl std::fmt::Debug for BasicAuthSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuthSection")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .field("password_env", &self.password_env)
            .finish()
    }
}

/// `[http.tls]`: PEM files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The certificate chain, leaf first.
    pub cert_file: std::path::PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: std::path::PathBuf,
}

impl HttpSection {
    fn security(&self) -> anyhow::Result<HttpSecurity> {
        let basic_auth = match &self.basic_auth {
            None => None,
            Some(auth) => {
                if auth.username.is_empty() || auth.username.contains(':') {
                    bail!("[http.basic_auth] username must be non-empty and without ':'");
                }
                let password = crate::secrets::one_of(
                    "password",
                    auth.password.as_deref(),
                    auth.password_file.as_deref(),
                    auth.password_env.as_deref(),
                )
                .context("[http.basic_auth]")?
                .context("[http.basic_auth] needs password, password_file or password_env")?;
                Some(BasicAuth::new(&auth.username, &password))
            }
        };
        let tls = match &self.tls {
            None => None,
            Some(tls) => {
                Some(salespulse_exporter::security::tls_config(&tls.cert_file, &tls.key_file).context("[http.tls]")?)
            }
        };
        Ok(HttpSecurity { basic_auth, tls })
    }
}

/// `[windows]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowsSection {
    /// Sliding windows, exported with a `window` label.
    pub sliding: Vec<String>,
    /// Keep `window="today"`, since local midnight.
    pub today: bool,
    /// The time zone of `today` and `shift` (an IANA name such as `Europe/Moscow`).
    pub time_zone: String,
    /// Keep `window="shift"`: the current working shift, or the last one between shifts.
    pub shift: Option<ShiftSection>,
    /// How far behind a partition's newest event time the watermark trails.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// Which windows each windowed family exports (every window is a series per manager).
    pub export: ExportSection,
}

impl Default for WindowsSection {
    fn default() -> Self {
        // The core's defaults, written back in the file's notation.
        let core = WindowsConfig::default();
        WindowsSection {
            sliding: core.sliding,
            today: core.today,
            time_zone: core.time_zone.name().to_owned(),
            shift: core.shift.map(|shift| ShiftSection {
                start: shift.start.format("%H:%M").to_string(),
                length: format!("{}m", shift.length_minutes),
            }),
            allowed_lateness: Duration::from_millis(EngineConfig::DEFAULT_ALLOWED_LATENESS_MS as u64),
            export: ExportSection::default(),
        }
    }
}

/// `[export]`: what `/metrics` writes beyond the default families, and how long a body is reused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsExportSection {
    /// Optional per-manager families to write as well (off by default: series per manager that no
    /// shipped dashboard or rule reads; listed in docs/metrics.md).
    pub include: Vec<String>,
    /// The `q` values of `salespulse_window_response_time_seconds` (`0.5`, `0.9`, `0.99`).
    pub response_time_quantiles: Vec<String>,
    /// The `hours` values of `salespulse_window_response_time_seconds` (`all`, `working`).
    pub response_time_hours: Vec<String>,
    /// A full scrape within this long of the start of the previous render gets that body (values
    /// up to this much older); `0s` renders for every scrape (concurrent scrapes still share one).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for MetricsExportSection {
    fn default() -> Self {
        let messages = MessageExport::default();
        MetricsExportSection {
            include: Vec::new(),
            response_time_quantiles: messages.response_time_quantiles,
            response_time_hours: messages.response_time_hours,
            max_age: Duration::ZERO,
        }
    }
}

impl MetricsExportSection {
    fn options(&self) -> anyhow::Result<salespulse_exporter::ExportOptions> {
        for family in &self.include {
            if !salespulse_engine::OPTIONAL_FAMILIES.contains(&family.as_str()) {
                bail!(
                    "include: {family:?} is not an optional family; they are: {}",
                    salespulse_engine::OPTIONAL_FAMILIES.join(", ")
                );
            }
        }
        if self.max_age > Duration::from_secs(60) {
            bail!("max_age: at most 60s (values served are up to max_age old)");
        }
        Ok(salespulse_exporter::ExportOptions { include: self.include.clone(), max_age: self.max_age })
    }
}

/// `[windows.shift]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftSection {
    /// Local start time, `HH:MM` on a quarter hour.
    pub start: String,
    /// Length, whole quarter hours up to 24h (`9h`, `7h30m`).
    pub length: String,
}

/// `[windows.export]`: window labels per windowed family.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportSection {
    /// `salespulse_window_calls`.
    pub calls: Vec<String>,
    /// `salespulse_window_successful_contacts`.
    pub successful_contacts: Vec<String>,
    /// `salespulse_window_missed_calls`.
    pub missed_calls: Vec<String>,
    /// `salespulse_window_call_talk_seconds`.
    pub call_talk_seconds: Vec<String>,
    /// `salespulse_window_messages`.
    pub messages: Vec<String>,
    /// `salespulse_window_new_dialogs`.
    pub new_dialogs: Vec<String>,
    /// `salespulse_window_response_time_seconds` (the most memory per window: histograms).
    pub response_time: Vec<String>,
    /// `salespulse_window_service_level` and `salespulse_window_responses`.
    pub service_level: Vec<String>,
    /// `salespulse_window_cards_touched`.
    pub cards_touched: Vec<String>,
    /// `salespulse_window_comments`.
    pub comments: Vec<String>,
    /// `salespulse_window_thin_comments`.
    pub thin_comments: Vec<String>,
    /// `salespulse_window_client_transitions`.
    pub client_transitions: Vec<String>,
}

impl Default for ExportSection {
    fn default() -> Self {
        let (calls, cards, messages) = (CallExport::default(), CardExport::default(), MessageExport::default());
        ExportSection {
            messages: messages.messages,
            new_dialogs: messages.new_dialogs,
            response_time: messages.response_time,
            service_level: messages.service_level,
            calls: calls.calls,
            successful_contacts: calls.successful_contacts,
            missed_calls: calls.missed_calls,
            call_talk_seconds: calls.talk_seconds,
            cards_touched: cards.cards_touched,
            comments: cards.comments,
            thin_comments: cards.thin_comments,
            client_transitions: cards.client_transitions,
        }
    }
}

impl WindowsSection {
    fn windows(&self) -> anyhow::Result<Windows> {
        let time_zone: chrono_tz::Tz = self
            .time_zone
            .parse()
            .map_err(|_| anyhow::anyhow!("time_zone {:?} is not an IANA zone", self.time_zone))?;
        let shift = match &self.shift {
            None => None,
            Some(shift) => {
                let start = chrono::NaiveTime::parse_from_str(&shift.start, "%H:%M")
                    .with_context(|| format!("shift start {:?} is not HH:MM", shift.start))?;
                let length_minutes = parse_minutes(&shift.length)
                    .with_context(|| format!("shift length {:?} is not whole minutes", shift.length))?;
                Some(ShiftConfig { start, length_minutes })
            }
        };
        let config = WindowsConfig { sliding: self.sliding.clone(), today: self.today, shift, time_zone };
        Ok(Windows::new(&config)?)
    }
}

/// `[calls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallsSection {
    /// An answered call with at least this much talk is a successful contact (inclusive).
    #[serde(with = "humantime_serde")]
    pub successful_contact_min_talk: Duration,
}

impl Default for CallsSection {
    fn default() -> Self {
        CallsSection { successful_contact_min_talk: Duration::from_secs(40) }
    }
}

/// `[messages]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagesSection {
    /// A dialog with no message for this long is over; its next message starts a new dialog.
    #[serde(with = "humantime_serde")]
    pub dialog_idle_gap: Duration,
    /// A response within this time (inclusive) meets the service level.
    #[serde(with = "humantime_serde")]
    pub service_level_target: Duration,
    /// Dialogs tracked per manager.
    pub max_dialogs_per_manager: usize,
    /// The schedule of working-hours response times.
    pub working_hours: WorkingHoursSection,
}

impl Default for MessagesSection {
    fn default() -> Self {
        let core = MessagesConfig::default();
        MessagesSection {
            dialog_idle_gap: Duration::from_millis(core.dialog_idle_gap_ms as u64),
            service_level_target: Duration::from_millis(core.service_level_target_ms as u64),
            max_dialogs_per_manager: core.max_dialogs_per_manager,
            working_hours: WorkingHoursSection::default(),
        }
    }
}

/// `[messages.working_hours]`: a weekly schedule, e.g. `mon = ["09:00-13:00", "14:00-18:00"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkingHoursSection {
    /// IANA time zone of the schedule.
    pub time_zone: String,
    /// Weekday (`mon` .. `sun`) to working intervals (`HH:MM-HH:MM`); days not listed are off.
    pub days: BTreeMap<String, Vec<String>>,
}

impl Default for WorkingHoursSection {
    fn default() -> Self {
        let office = vec!["09:00-18:00".to_owned()];
        WorkingHoursSection {
            time_zone: "UTC".into(),
            days: ["mon", "tue", "wed", "thu", "fri"].iter().map(|d| (d.to_string(), office.clone())).collect(),
        }
    }
}

/// `[cards]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CardsSection {
    /// A comment with a known length below this many characters is thin.
    pub thin_comment_chars: u32,
    /// Cards (deals, leads, ...) tracked per manager.
    pub max_cards_per_manager: usize,
    /// Tasks tracked per manager.
    pub max_tasks_per_manager: usize,
    /// Pipelines whose names and stages become label values; others fold into "other".
    pub pipelines: Vec<PipelineSection>,
    /// The one currency amounts are in (ISO 4217); events naming another are rejected
    /// (reason `currency_mismatch`). Unset: no check.
    pub currency: Option<String>,
    /// Open deals at or above this stage progress (percent) are hot.
    pub hot_deal_progress_pct: f64,
    /// Invoices tracked per manager (receivables and de-duplication of repeated invoices).
    pub max_invoices_per_manager: usize,
    /// Clients tracked per manager for their relationship types (salespulse_clients).
    pub max_clients_per_manager: usize,
    /// A client without an open deal and without an event for this long leaves the manager's
    /// relationship counts.
    #[serde(with = "humantime_serde")]
    pub client_idle: Duration,
}

impl Default for CardsSection {
    fn default() -> Self {
        let core = CardsConfig::default();
        CardsSection {
            thin_comment_chars: core.thin_comment_chars,
            max_cards_per_manager: core.max_cards_per_manager,
            max_tasks_per_manager: core.max_tasks_per_manager,
            pipelines: Vec::new(),
            currency: None,
            hot_deal_progress_pct: core.commerce.hot_deal_progress_pct,
            max_invoices_per_manager: core.commerce.max_invoices_per_manager,
            max_clients_per_manager: core.max_clients_per_manager,
            client_idle: Duration::from_millis(core.client_idle_ms as u64),
        }
    }
}

/// `[[cards.pipelines]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    /// The pipeline's name as events spell it.
    pub name: String,
    /// Its stages in funnel order, as events spell them.
    pub stages: Vec<String>,
    /// Progress (0..=100 percent) per stage, for the weighted pipeline and hot deals; wins over
    /// the events' `stage_progress_pct`.
    #[serde(default)]
    pub progress: BTreeMap<String, f64>,
    /// Per stage, how long an open deal may sit in it before it counts as stuck ("7d").
    #[serde(default)]
    pub stuck_after: BTreeMap<String, String>,
}

/// `[plans]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlansSection {
    /// The plans file (targets per manager and team); re-read on SIGHUP. Unset: no plans.
    pub file: Option<std::path::PathBuf>,
    /// The plan period: "month", "quarter" or "week".
    pub period: String,
    /// The zone periods are cut in; unset: `[windows] time_zone`.
    pub time_zone: Option<String>,
}

impl Default for PlansSection {
    fn default() -> Self {
        PlansSection { file: None, period: "month".into(), time_zone: None }
    }
}

/// `[joins]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JoinsSection {
    /// A successful call naming a client or card is unlogged when no card change by the manager
    /// names them within this long after the call.
    #[serde(with = "humantime_serde")]
    pub unlogged_call_delay: Duration,
}

impl Default for JoinsSection {
    fn default() -> Self {
        JoinsSection { unlogged_call_delay: Duration::from_millis(JoinConfig::default().unlogged_call_delay_ms as u64) }
    }
}

/// `[anomalies]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomaliesSection {
    /// Weight of a new slot in the baseline's moving averages (0 < alpha <= 1).
    pub alpha: f64,
    /// Observations of a time slot needed before it is scored.
    pub warmup_observations: u32,
    /// A manager inside the shift with no event for this long is silent.
    #[serde(with = "humantime_serde")]
    pub silence_after: Duration,
    /// Where baselines are saved (atomically, every few minutes and on stop) and read at start;
    /// unset keeps them in memory only.
    pub snapshot_path: Option<std::path::PathBuf>,
}

impl Default for AnomaliesSection {
    fn default() -> Self {
        let core = AnomalySettings::default();
        AnomaliesSection {
            alpha: core.config.alpha,
            warmup_observations: core.config.warmup_observations,
            silence_after: Duration::from_millis(core.silence_after_ms as u64),
            snapshot_path: None,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Hard cap on managers held; events of further new managers are counted as overflow.
    pub max_managers: usize,
    /// Managers with no event for this long are evicted (their series disappear).
    #[serde(with = "humantime_serde")]
    pub manager_idle: Duration,
    /// Events further ahead of the wall clock than this are rejected.
    #[serde(with = "humantime_serde")]
    pub future_tolerance: Duration,
    /// A repeated event_id is dropped for at least this long of event time.
    #[serde(with = "humantime_serde")]
    pub dedup_horizon: Duration,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_managers: 50_000,
            manager_idle: Duration::from_secs(24 * 3600),
            future_tolerance: Duration::from_secs(300),
            dedup_horizon: Duration::from_secs(900),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `salespulse=debug,info`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection { format: LogFormat::Text, level: "info".into() }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated settings the daemon runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The engine's configuration.
    pub engine: EngineConfig,
    /// The consumer's configuration.
    pub ingest: IngestConfig,
    /// The HTTP listen address.
    pub listen: SocketAddr,
    /// Logging.
    pub log: LogSection,
    /// Where anomaly baselines are persisted, if anywhere.
    pub baseline_snapshot: Option<std::path::PathBuf>,
    /// The dead-letter producer's configuration, when a topic is set.
    pub dead_letter: Option<DeadLetterConfig>,
    /// Basic auth and TLS of the HTTP listener.
    pub http_security: HttpSecurity,
    /// The plans file, re-read on SIGHUP.
    pub plans_file: Option<std::path::PathBuf>,
    /// Optional families and body reuse of `/metrics`.
    pub export: salespulse_exporter::ExportOptions,
    /// Source mappings, when `[sources]` is configured.
    pub sources: Option<SourcesSettings>,
}

/// Where the source mappings are and which topics use them.
#[derive(Debug, Clone)]
pub struct SourcesSettings {
    /// The directory of mapping files.
    pub dir: std::path::PathBuf,
    /// The manager directory file.
    pub directory: Option<std::path::PathBuf>,
    /// The snapshot file of remembered values.
    pub memory_snapshot: Option<std::path::PathBuf>,
    /// (topic, mapping name) for every mapped topic.
    pub topics: Vec<(String, String)>,
}

fn default_group_id() -> String {
    "salespulse".into()
}

/// Reads `path` with environment overrides (`SALESPULSE__KAFKA__GROUP_ID=...`).
pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
    if !path.exists() {
        bail!("config file {} does not exist", path.display());
    }
    let raw = config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("SALESPULSE")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("kafka.topics")
                .with_list_parse_key("windows.sliding")
                .try_parsing(true),
        )
        .build()
        .with_context(|| format!("reading {}", path.display()))?;
    let mut config =
        raw.try_deserialize::<FileConfig>().with_context(|| format!("invalid configuration in {}", path.display()))?;
    // `[sources]` paths name files that sit beside the configuration (mappings, the manager
    // directory): relative ones are read from the file's directory, wherever the process runs.
    let base = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if let Some(sources) = &mut config.sources {
        sources.resolve(base);
    }
    Ok(config)
}

impl FileConfig {
    /// Validates and converts into what the daemon runs with.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let windows = self.windows.windows().context("[windows]")?;
        let mut engine = EngineConfig::new(windows);
        let export = &self.windows.export;
        engine.calls = CallsConfig {
            successful_talk_ms: self.calls.successful_contact_min_talk.as_millis() as u64,
            export: CallExport {
                calls: export.calls.clone(),
                successful_contacts: export.successful_contacts.clone(),
                missed_calls: export.missed_calls.clone(),
                talk_seconds: export.call_talk_seconds.clone(),
            },
        };
        engine.cards = CardsConfig {
            thin_comment_chars: self.cards.thin_comment_chars,
            pipelines: self
                .cards
                .pipelines
                .iter()
                .map(|p| PipelineConfig { name: p.name.clone(), stages: p.stages.clone() })
                .collect(),
            max_cards_per_manager: self.cards.max_cards_per_manager,
            max_tasks_per_manager: self.cards.max_tasks_per_manager,
            export: CardExport {
                cards_touched: export.cards_touched.clone(),
                comments: export.comments.clone(),
                thin_comments: export.thin_comments.clone(),
                client_transitions: export.client_transitions.clone(),
            },
            commerce: self.commerce(&engine.windows).context("[cards]/[plans]")?,
            max_clients_per_manager: self.cards.max_clients_per_manager,
            client_idle_ms: millis(self.cards.client_idle),
        };
        engine.joins.unlogged_call_delay_ms = millis(self.joins.unlogged_call_delay);
        engine.anomalies.config.alpha = self.anomalies.alpha;
        engine.anomalies.config.warmup_observations = self.anomalies.warmup_observations;
        engine.anomalies.config.time_zone = engine.windows.time_zone();
        engine.anomalies.config.validate().context("[anomalies]")?;
        engine.anomalies.silence_after_ms = millis(self.anomalies.silence_after);
        let hours = &self.messages.working_hours;
        engine.messages = MessagesConfig {
            dialog_idle_gap_ms: millis(self.messages.dialog_idle_gap),
            service_level_target_ms: millis(self.messages.service_level_target),
            working_hours: WorkingHours::parse(&hours.time_zone, &hours.days).context("[messages.working_hours]")?,
            max_dialogs_per_manager: self.messages.max_dialogs_per_manager,
            export: MessageExport {
                messages: export.messages.clone(),
                new_dialogs: export.new_dialogs.clone(),
                response_time: export.response_time.clone(),
                service_level: export.service_level.clone(),
                response_time_quantiles: self.export.response_time_quantiles.clone(),
                response_time_hours: self.export.response_time_hours.clone(),
            },
        };
        // Resolve the export lists now, so a typo is a configuration error, not a start failure.
        salespulse_calls::Calls::new(&engine.windows, &engine.calls).context("[windows.export]")?;
        salespulse_cards::Cards::new(&engine.windows, &engine.cards).context("[cards]")?;
        salespulse_messages::Messages::new(&engine.windows, &engine.messages).context("[messages] or [export]")?;
        let export = self.export.options().context("[export]")?;
        engine.allowed_lateness_ms = millis(self.windows.allowed_lateness);
        engine.max_managers = self.limits.max_managers;
        engine.manager_idle_ms = millis(self.limits.manager_idle);
        engine.future_tolerance_ms = millis(self.limits.future_tolerance);
        engine.dedup_horizon_ms = millis(self.limits.dedup_horizon);
        if self.kafka.topics.is_empty() {
            bail!("[kafka] topics: at least one topic is needed");
        }
        let mut names = Vec::new();
        let mut mapped = Vec::new();
        for entry in &self.kafka.topics {
            if let TopicEntry::Table(TopicTable { name, mapping: Some(mapping), .. }) = entry {
                mapped.push((name.trim().to_owned(), mapping.trim().to_owned()));
            }
            let topic = match entry {
                TopicEntry::Name(name) => TopicConfig { name: name.trim().to_owned(), encoding: None, kind: None },
                TopicEntry::Table(table) => TopicConfig {
                    name: table.name.trim().to_owned(),
                    encoding: match table.encoding {
                        EncodingSetting::Auto => None,
                        EncodingSetting::Json => Some(Encoding::Json),
                        EncodingSetting::Protobuf => Some(Encoding::Protobuf),
                    },
                    kind: match table.kind {
                        KindSetting::Mixed => None,
                        KindSetting::Call => Some(Kind::Call),
                        KindSetting::Message => Some(Kind::Message),
                        KindSetting::CardChange => Some(Kind::CardChange),
                    },
                },
            };
            if topic.name.is_empty() {
                bail!("[kafka] topics: a topic name is empty");
            }
            if names.contains(&topic.name) {
                bail!("[kafka] topics: {:?} is listed twice", topic.name);
            }
            names.push(topic.name.clone());
            engine.topics.push(topic);
        }
        if !(0..=19).contains(&self.kafka.apply_nice) {
            bail!("[kafka] apply_nice: {} is not within 0..=19", self.kafka.apply_nice);
        }
        let properties = crate::secrets::resolve_properties(&self.kafka.properties).context("[kafka.properties]")?;
        let dead_letter = self.kafka.dead_letter.config(&self.kafka.bootstrap_servers, &properties, &names)?;
        let ingest = IngestConfig {
            bootstrap_servers: self.kafka.bootstrap_servers.clone(),
            group_id: self.kafka.group_id.clone(),
            topics: names,
            properties,
            apply_threads: self.kafka.apply_threads,
            apply_nice: self.kafka.apply_nice,
        };
        let baseline_snapshot = self.anomalies.snapshot_path.clone();
        let sources = match (&self.sources, mapped.is_empty()) {
            (Some(section), _) => Some(SourcesSettings {
                dir: section.dir.clone(),
                directory: section.directory.clone(),
                memory_snapshot: section.memory_snapshot.clone(),
                topics: mapped,
            }),
            (None, true) => None,
            (None, false) => bail!("[kafka] topics: a topic names a mapping but there is no [sources] section"),
        };
        let http_security = self.http.security()?;
        let plans_file = self.plans.file.clone();
        if let Some(path) = &plans_file {
            crate::plans::load(path)?;
        }
        Ok(Settings {
            engine,
            ingest,
            listen: self.http.listen,
            log: self.log.clone(),
            baseline_snapshot,
            dead_letter,
            sources,
            http_security,
            plans_file,
            export,
        })
    }

    /// The commercial settings: currency, stage rules, plan period.
    fn commerce(&self, windows: &Windows) -> anyhow::Result<CommerceConfig> {
        let mut stages = Vec::new();
        for pipeline in &self.cards.pipelines {
            let mut names: Vec<&String> = pipeline.progress.keys().chain(pipeline.stuck_after.keys()).collect();
            names.sort();
            names.dedup();
            for stage in names {
                let stuck_after_ms = match pipeline.stuck_after.get(stage) {
                    Some(text) => Some(millis(humantime::parse_duration(text).with_context(|| {
                        format!("pipeline {:?} stuck_after {stage:?}: {text:?} is not a duration", pipeline.name)
                    })?)),
                    None => None,
                };
                stages.push(StageRule {
                    pipeline: pipeline.name.clone(),
                    stage: stage.clone(),
                    progress_pct: pipeline.progress.get(stage).copied(),
                    stuck_after_ms,
                });
            }
        }
        let currency = match &self.cards.currency {
            Some(code) if code.len() == 3 && code.bytes().all(|b| b.is_ascii_alphabetic()) => {
                Some(code.to_ascii_uppercase())
            }
            Some(code) => bail!("currency {code:?} is not a 3-letter ISO 4217 code"),
            None => None,
        };
        let period = Period::parse(&self.plans.period)
            .with_context(|| format!("period {:?}: expected month, quarter or week", self.plans.period))?;
        let time_zone = match &self.plans.time_zone {
            Some(name) => name.parse().map_err(|_| anyhow::anyhow!("time_zone {name:?} is not an IANA zone"))?,
            None => windows.time_zone(),
        };
        Ok(CommerceConfig {
            currency,
            hot_deal_progress_pct: self.cards.hot_deal_progress_pct,
            period,
            time_zone,
            stages,
            max_invoices_per_manager: self.cards.max_invoices_per_manager,
        })
    }
}

impl DeadLetterSection {
    fn config(
        &self,
        bootstrap_servers: &str,
        shared: &salespulse_kafka::KafkaProperties,
        sources: &[String],
    ) -> anyhow::Result<Option<DeadLetterConfig>> {
        let Some(topic) = self.topic.as_deref().map(str::trim) else { return Ok(None) };
        if topic.is_empty() {
            bail!("[kafka.dead_letter] topic is empty (leave it unset to turn dead letters off)");
        }
        if sources.iter().any(|source| source == topic) {
            bail!("[kafka.dead_letter] topic {topic:?} is also consumed: its letters would be read back");
        }
        if self.queue_capacity == 0 || self.delivery_timeout.is_zero() {
            bail!("[kafka.dead_letter] queue_capacity and delivery_timeout must be above zero");
        }
        let own = crate::secrets::resolve_properties(&self.properties).context("[kafka.dead_letter.properties]")?;
        let mut properties = shared.clone();
        properties.0.extend(own.0);
        let mut config = DeadLetterConfig::new(bootstrap_servers, topic);
        config.queue_capacity = self.queue_capacity;
        config.delivery_timeout = self.delivery_timeout;
        config.properties = properties;
        Ok(Some(config))
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Settings> {
        let file: FileConfig = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()?
            .try_deserialize()?;
        file.settings()
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let settings = parse("[kafka]\nbootstrap_servers = \"127.0.0.1:9092\"\ntopics = [\"calls\"]\n").unwrap();
        assert_eq!(settings.ingest.group_id, "salespulse");
        assert_eq!(settings.engine.calls.successful_talk_ms, 40_000);
        let labels: Vec<&str> = settings.engine.windows.specs().iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["5m", "1h", "8h", "today", "shift"]);
        assert_eq!(settings.engine.allowed_lateness_ms, 120_000);
        assert_eq!(settings.listen.to_string(), "127.0.0.1:9898");
        assert_eq!(settings.engine.topics[0].encoding, None);
    }

    #[test]
    fn topic_tables_and_durations() {
        let settings = parse(
            r#"
            [kafka]
            bootstrap_servers = "b:1"
            [[kafka.topics]]
            name = "pbx"
            encoding = "protobuf"
            kind = "call"
            [kafka.properties]
            "session.timeout.ms" = "10000"
            [calls]
            successful_contact_min_talk = "30s"
            [[cards.pipelines]]
            name = "sales"
            stages = ["new", "won"]
            [joins]
            unlogged_call_delay = "10m"
            [messages]
            service_level_target = "2m"
            [messages.working_hours]
            time_zone = "Europe/Moscow"
            days = { mon = ["09:00-13:00", "14:00-18:00"], sat = ["10:00-14:00"] }
            [windows]
            sliding = ["1m", "8h"]
            time_zone = "Europe/Moscow"
            [windows.shift]
            start = "22:00"
            length = "10h"
            [windows.export]
            calls = ["1m", "shift"]
            successful_contacts = ["8h"]
            missed_calls = []
            call_talk_seconds = ["today"]
            "#,
        )
        .unwrap();
        assert_eq!(settings.engine.topics[0].encoding, Some(Encoding::Protobuf));
        assert_eq!(settings.engine.topics[0].kind, Some(Kind::Call));
        assert_eq!(settings.engine.calls.successful_talk_ms, 30_000);
        assert_eq!(settings.ingest.properties.get("session.timeout.ms"), Some("10000"));
        assert_eq!(settings.engine.windows.specs()[1].label, "8h");
        assert_eq!(settings.engine.windows.time_zone(), chrono_tz::Europe::Moscow);
        assert_eq!(settings.engine.calls.export.calls, ["1m", "shift"]);
        assert_eq!(settings.engine.cards.pipelines[0].stages, ["new", "won"]);
        assert_eq!(settings.engine.joins.unlogged_call_delay_ms, 600_000);
        assert_eq!(settings.engine.messages.service_level_target_ms, 120_000);
        let hours = &settings.engine.messages.working_hours;
        // Monday 2026-11-23 12:00 to 15:00 Moscow time: 12-13 and 14-15 are working hours.
        let noon = chrono::DateTime::parse_from_rfc3339("2026-11-23T12:00:00+03:00").unwrap().timestamp_millis();
        assert_eq!(hours.working_ms(noon, noon + 3 * 3_600_000), 2 * 3_600_000);
    }

    #[test]
    fn export_section_reaches_the_exporter_and_the_message_families() {
        let defaults = parse("[kafka]\nbootstrap_servers = \"b\"\ntopics = [\"c\"]\n").unwrap();
        assert_eq!(defaults.export, salespulse_exporter::ExportOptions::default());
        assert_eq!(defaults.engine.messages.export.response_time_quantiles, ["0.5", "0.9"]);
        let settings = parse(
            "[kafka]\nbootstrap_servers = \"b\"\ntopics = [\"c\"]\n[export]\ninclude = [\"salespulse_deals_top_stage\"]\n\
             response_time_quantiles = [\"0.99\"]\nresponse_time_hours = [\"all\", \"working\"]\nmax_age = \"2s\"\n",
        )
        .unwrap();
        assert_eq!(settings.export.include, ["salespulse_deals_top_stage"]);
        assert_eq!(settings.export.max_age, Duration::from_secs(2));
        assert_eq!(settings.engine.messages.export.response_time_quantiles, ["0.99"]);
        assert_eq!(settings.engine.messages.export.response_time_hours, ["all", "working"]);
    }

    #[test]
    fn apply_threads_are_niced_by_default_and_can_be_left_alone() {
        let defaults = parse("[kafka]\nbootstrap_servers = \"b\"\ntopics = [\"c\"]\n").unwrap();
        assert_eq!(defaults.ingest.apply_nice, salespulse_kafka::DEFAULT_APPLY_NICE);
        let zero = parse("[kafka]\nbootstrap_servers = \"b\"\ntopics = [\"c\"]\napply_nice = 0\n").unwrap();
        assert_eq!(zero.ingest.apply_nice, 0);
    }

    #[test]
    fn mistakes_are_errors() {
        for (text, needle) in [
            ("[kafka]\nbootstrap_servers = \"b\"\ntopics = [\"c\"]\ngroupid = \"x\"\n", "groupid"),
            ("[kafka]\nbootstrap_servers = \"b\"\ntopics = []\n", "at least one topic"),
            ("[kafka]\nbootstrap_servers = \"b\"\ntopics = [\"c\", \"c\"]\n", "twice"),
            ("[kafka]\nbootstrap_servers = \"b\"\ntopics = [\"c\"]\n[windows]\nsliding = [\"soon\"]\n", "soon"),
            ("[kafka]\nbootstrap_servers = \"b\"\ntopics = [\"c\"]\n[windows]\ntime_zone = \"Mars/Base\"\n", "Mars/Base"),
            ("[kafka]\nbootstrap_servers = \"b\"\ntopics = [\"c\"]\n[windows.shift]\nstart = \"9:10\"\nlength = \"9h\"\n", "shift"),
            ("[kafka]\nbootstrap_servers = \"b\"\ntopics = [\"c\"]\n[windows.export]\ncalls = [\"2h\"]\n", "2h"),
            ("[kafka]\nbootstrap_servers = \"b\"\ntopics = [\"c\"]\n[messages.working_hours]\ndays = { funday = [\"09:00-18:00\"] }\n", "funday"),
            ("[kafka]\nbootstrap_servers = \"b\"\ntopics = [\"c\"]\n[http]\nlisten = \"nowhere\"\n", "listen"),
            ("[kafka]\nbootstrap_servers = \"b\"\ntopics = [\"c\"]\n[export]\ninclude = [\"salespulse_calls_total\"]\n", "not an optional family"),
            ("[kafka]\nbootstrap_servers = \"b\"\ntopics = [\"c\"]\n[export]\nresponse_time_quantiles = [\"0.95\"]\n", "response_time_quantiles"),
            ("[kafka]\nbootstrap_servers = \"b\"\ntopics = [\"c\"]\n[export]\nmax_age = \"5m\"\n", "max_age"),
            ("[kafka]\nbootstrap_servers = \"b\"\ntopics = [\"c\"]\napply_nice = 20\n", "apply_nice"),
            ("[kafka]\nbootstrap_servers = \"b\"\ntopics = [\"c\"]\napply_nice = -1\n", "apply_nice"),
        ] {
            let error = format!("{:#}", parse(text).unwrap_err());
            assert!(error.contains(needle), "{needle}: {error}");
        }
    }
}
