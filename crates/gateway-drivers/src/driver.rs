//! The shape of a driver: a driver *is* its device configuration type
//! (Vector's `SinkConfig::build` habit). The type implementing [`Driver`]
//! holds the device's own fields (`address`, `unit_id`, ...), names its tags'
//! own fields as [`Driver::Tag`], checks what the types alone cannot, and
//! runs one device in a [`DriverContext`]. The registry
//! ([`crate::registry::DRIVERS`]) maps `driver = "..."` to it, so adding a
//! protocol is one module folder and one registry line; nothing else in the
//! gateway names a protocol.
//!
//! The common fields every device and tag has (`name`, `enabled`,
//! `poll_interval_ms`, `tags`, `writable`) stay in [`DeviceConfig`] and
//! [`TagConfig`]; the driver's own fields travel with them as
//! [`DriverParams`] and [`TagParams`], type-erased so that the manager, the
//! API and the store handle every protocol alike, and typed again inside the
//! driver ([`DeviceConfig::tags_of`], [`DriverParams::get`]).
//!
//! A complete driver, registered in a registry of its own and run by the
//! real [`DriverManager`](crate::DriverManager) on a memory bus:
//!
//! ```
//! use std::sync::Arc;
//!
//! use gateway_bus::{Bus, BusMetrics, BusSettings, Persistence, SubscribeOptions};
//! use gateway_drivers::{DeviceConfig, Driver, DriverContext, DriverEntry, DriverManager};
//! use gateway_model::{Batch, DataFrame, FieldError, Frame, Quality, Value, now_ns};
//! use serde::{Deserialize, Serialize};
//!
//! /// `driver = "fixed"`: every tag reports its `value`, every poll.
//! #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Fixed {}
//!
//! #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct FixedTag {
//!     value: f64,
//! }
//!
//! impl Driver for Fixed {
//!     const NAME: &'static str = "fixed";
//!     type Tag = FixedTag;
//!
//!     fn validate(&self, dev: &DeviceConfig) -> Result<(), FieldError> {
//!         for (i, (_, t)) in dev.tags_of::<FixedTag>().enumerate() {
//!             if !t.value.is_finite() {
//!                 return Err(FieldError::new(format!("tags[{i}].value"), "must be a finite number"));
//!             }
//!         }
//!         Ok(())
//!     }
//!
//!     fn run(&self, dev: Arc<DeviceConfig>, mut ctx: DriverContext) -> impl Future<Output = ()> + Send + 'static {
//!         async move {
//!             let mut tick = tokio::time::interval(std::time::Duration::from_millis(dev.poll_interval_ms));
//!             loop {
//!                 tokio::select! {
//!                     _ = tick.tick() => {
//!                         let ts = now_ns();
//!                         let frames = dev.tags_of::<FixedTag>().filter_map(|(t, f)| {
//!                             Some(Frame::Data(DataFrame::new(dev.tag_id(&t.name)?, Value::F64(f.value), Quality::GOOD, ts)))
//!                         });
//!                         if ctx.publish(Batch::from(frames.collect::<Vec<_>>())).await.is_err() {
//!                             break;
//!                         }
//!                     }
//!                     _ = ctx.shutdown.wait() => break,
//!                 }
//!             }
//!         }
//!     }
//! }
//!
//! // The one registry line (here a registry of its own; the gateway's is `DRIVERS`).
//! static MINE: &[DriverEntry] = &[DriverEntry::of::<Fixed>()];
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dev = DeviceConfig::from_json_with(MINE, serde_json::json!({
//!     "name": "panel", "driver": "fixed", "poll_interval_ms": 10,
//!     "tags": [{"name": "answer", "value": 42.0}],
//! })).unwrap();
//! let bad = DeviceConfig::from_json_with(MINE, serde_json::json!({
//!     "name": "panel", "driver": "fixed", "tags": [{"name": "x", "value": 1.0, "colour": "red"}],
//! }));
//! let e = bad.unwrap_err();
//! assert!(e.path.starts_with("tags[0]") && e.message.contains("unknown field `colour`"), "{e}");
//!
//! let settings = BusSettings { persistence: Persistence::Memory, ..BusSettings::memory_optimized() };
//! let bus = Bus::open(settings, Arc::new(BusMetrics::unregistered())).unwrap();
//! let mut sub = bus.subscribe(SubscribeOptions::lossy("test", 1024)).unwrap();
//! let manager = DriverManager::new(bus.clone());
//! manager.apply(dev).await;
//! let got = sub.recv().await.unwrap();
//! let (_, frame) = got.frames().next().unwrap();
//! assert_eq!(frame.as_data().unwrap().value, Value::F64(42.0));
//! manager.stop_all().await;
//! # });
//! ```

use std::any::Any;
use std::fmt::Debug;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use gateway_bus::{Bus, CommandInbox, Shutdown};
use gateway_model::{Batch, FieldError, parse_fields};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::config::{DeviceConfig, TagConfig};
use crate::security::Reach;
use crate::status::DeviceStatus;

/// A protocol driver, implemented by the type that holds a device's own
/// fields under that driver.
pub trait Driver: Serialize + DeserializeOwned + Clone + PartialEq + Debug + Send + Sync + 'static {
    /// The name in `driver = "..."`.
    const NAME: &'static str;

    /// Device fields that hold secrets (a password): the API shows them as
    /// [`REDACTED`](crate::config::REDACTED) and keeps the stored value when a
    /// change sends that back. The default: none.
    const SECRET_FIELDS: &'static [&'static str] = &[];

    /// A tag's own fields under this driver (what a tag has besides `name`
    /// and `writable`).
    type Tag: Serialize + DeserializeOwned + Clone + PartialEq + Debug + Send + Sync + 'static;

    /// Checks what the types alone cannot: ranges, combinations, each tag
    /// against the device. Error paths are relative to the device
    /// (`address`, `tags[2].bit`). Every tag of `dev` is a [`Self::Tag`]
    /// when this is called.
    fn validate(&self, dev: &DeviceConfig) -> Result<(), FieldError>;

    /// Checks `dev` against the devices configured before it in the same
    /// list, for resources they share (a serial line). The default shares nothing.
    fn check_against(&self, dev: &DeviceConfig, earlier: &[DeviceConfig]) -> Result<(), FieldError> {
        let _ = (dev, earlier);
        Ok(())
    }

    /// What the device opens or connects to (serial ports, hosts), for the
    /// `[security]` allow-lists ([`crate::security`]). A driver that reaches
    /// nothing outside the process (the simulator) keeps the default.
    fn reaches(&self) -> Vec<Reach> {
        Vec::new()
    }

    /// Runs the device until `ctx.shutdown` fires: connect, poll every
    /// `poll_interval_ms`, publish, answer the commands in `ctx.commands`,
    /// reconnect with backoff, report in `ctx.status`.
    fn run(&self, dev: Arc<DeviceConfig>, ctx: DriverContext) -> impl Future<Output = ()> + Send + 'static;

    /// Browsing, for a driver whose devices can list what they hold: the
    /// children of `node` (the driver's own notation; `None`: where browsing
    /// starts), as a JSON object the driver documents. Reaches out to the
    /// device. The default: no browsing (`None`), which the API answers with
    /// 400 `not_supported`.
    fn browse(&self, dev: Arc<DeviceConfig>, node: Option<String>, env: DriverEnv) -> Option<DriverFuture<Value>> {
        let _ = (dev, node, env);
        None
    }

    /// Import, with [`Driver::browse`]: turns the chosen points (JSON objects
    /// the driver documents, such as `{"node_id": ...}`) into tags in their
    /// JSON form (what [`TagConfig::from_json`] reads), asking the device
    /// what it must know of each. The default: no import (`None`).
    fn import(&self, dev: Arc<DeviceConfig>, points: Vec<Value>, env: DriverEnv) -> Option<DriverFuture<Vec<Value>>> {
        let _ = (dev, points, env);
        None
    }
}

/// A boxed future of a driver's optional capabilities ([`Driver::browse`],
/// [`Driver::import`]).
pub type DriverFuture<T> = Pin<Box<dyn Future<Output = Result<T, BrowseError>> + Send + 'static>>;

/// What browsing and importing need besides the device: the same as a
/// running driver has.
#[derive(Clone, Debug, Default)]
pub struct DriverEnv {
    /// The gateway's data directory ([`DriverContext::data_dir`]).
    pub data_dir: Option<PathBuf>,
}

/// Why browsing or importing failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BrowseError {
    /// The request itself is wrong (a malformed node id, an unknown field);
    /// the API answers 400.
    #[error("{0}")]
    Invalid(String),
    /// The device has no such node; the API answers 404.
    #[error("{0}")]
    NotFound(String),
    /// The device could not be reached or refused; the API answers 502.
    #[error("{0}")]
    Device(String),
}

/// The driver was told to stop (or the bus closed) while it waited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop;

/// Everything a driver task may touch; it meets the rest of the gateway only here.
#[derive(Debug)]
pub struct DriverContext {
    /// The gateway's bus; publish through [`DriverContext::publish`], which
    /// also gives up when `shutdown` fires.
    pub bus: Bus,
    /// Fires when the driver must stop (the device was changed, disabled or
    /// removed, or the gateway stops).
    pub shutdown: Shutdown,
    /// Commands routed to this device's tags; each must be answered.
    pub commands: CommandInbox,
    /// What the API and `/health` show about the device; the driver keeps it current.
    pub status: Arc<DeviceStatus>,
    /// The gateway's data directory, for what a driver must keep across
    /// restarts (an OPC UA client's certificates); each driver uses a folder
    /// of its own below it. `None` where the manager was given none (tests).
    pub data_dir: Option<PathBuf>,
}

impl DriverContext {
    /// Publishes, waiting under backpressure but giving up when told to stop.
    pub async fn publish(&mut self, batch: Batch) -> Result<(), Stop> {
        let bus = self.bus.clone();
        tokio::select! {
            r = bus.publish(Arc::new(batch)) => r.map(|_| ()).map_err(|e| {
                // Closed is the gateway stopping; anything else ends the
                // device, and the operator must see why.
                if !matches!(e, gateway_bus::BusError::Closed) {
                    tracing::error!(error = %e, "The bus refused a device's readings.");
                }
                Stop
            }),
            _ = self.shutdown.wait() => Err(Stop),
        }
    }
}

/// A driver's task, boxed so that the manager runs every protocol alike.
pub(crate) type DriverTask = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A device's own fields under its driver, whichever driver that is.
#[derive(Clone)]
pub struct DriverParams(Arc<dyn ErasedDriver>);

/// A tag's own fields under its device's driver.
#[derive(Clone)]
pub struct TagParams(Arc<dyn ErasedTag>);

impl DriverParams {
    pub(crate) fn new<D: Driver>(d: D) -> Self {
        DriverParams(Arc::new(d))
    }

    /// The driver's name (`sim`, `modbus_tcp`, ...).
    pub fn driver(&self) -> &'static str {
        self.0.name()
    }

    /// The fields as driver `D`'s type, if this is a `D` device.
    pub fn get<D: Driver>(&self) -> Option<&D> {
        self.0.as_any().downcast_ref()
    }

    /// The fields as a JSON object (what the config file and the API write).
    pub fn to_json(&self) -> Map<String, Value> {
        self.0.to_json()
    }

    /// Reads a tag's own fields under this driver (what is left of the tag's
    /// table once `name` and `writable` were taken out).
    pub fn parse_tag(&self, fields: Map<String, Value>) -> Result<TagParams, FieldError> {
        self.0.parse_tag(fields)
    }

    pub(crate) fn validate(&self, dev: &DeviceConfig) -> Result<(), FieldError> {
        self.0.validate(dev)
    }

    /// What the device opens or connects to ([`Driver::reaches`]).
    pub fn reaches(&self) -> Vec<Reach> {
        self.0.reaches()
    }

    /// The device fields that hold secrets ([`Driver::SECRET_FIELDS`]).
    pub fn secret_fields(&self) -> &'static [&'static str] {
        self.0.secret_fields()
    }

    pub(crate) fn check_against(&self, dev: &DeviceConfig, earlier: &[DeviceConfig]) -> Result<(), FieldError> {
        self.0.check_against(dev, earlier)
    }

    pub(crate) fn run(&self, dev: Arc<DeviceConfig>, ctx: DriverContext) -> DriverTask {
        self.0.run(dev, ctx)
    }

    /// [`Driver::browse`] of the device's driver; `None` if it cannot browse.
    pub fn browse(&self, dev: Arc<DeviceConfig>, node: Option<String>, env: DriverEnv) -> Option<DriverFuture<Value>> {
        self.0.browse(dev, node, env)
    }

    /// [`Driver::import`] of the device's driver; `None` if it cannot import.
    pub fn import(
        &self,
        dev: Arc<DeviceConfig>,
        points: Vec<Value>,
        env: DriverEnv,
    ) -> Option<DriverFuture<Vec<Value>>> {
        self.0.import(dev, points, env)
    }
}

impl TagParams {
    pub(crate) fn new<T: Serialize + PartialEq + Debug + Send + Sync + 'static>(t: T) -> Self {
        TagParams(Arc::new(t))
    }

    /// The fields as type `T` (a driver's [`Driver::Tag`]), if they are one.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref()
    }

    /// The tag's own fields as a JSON object, without `name` and `writable`.
    pub fn to_json(&self) -> Map<String, Value> {
        self.0.to_json()
    }
}

impl PartialEq for DriverParams {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_dyn(other.0.as_any())
    }
}

impl PartialEq for TagParams {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_dyn(other.0.as_any())
    }
}

impl Debug for DriverParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt_dyn(f)
    }
}

impl Debug for TagParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt_dyn(f)
    }
}

fn object<T: Serialize>(v: &T) -> Map<String, Value> {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// The object-safe face of a [`Driver`], implemented for every driver.
trait ErasedDriver: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn as_any(&self) -> &dyn Any;
    fn eq_dyn(&self, other: &dyn Any) -> bool;
    fn fmt_dyn(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result;
    fn to_json(&self) -> Map<String, Value>;
    fn parse_tag(&self, fields: Map<String, Value>) -> Result<TagParams, FieldError>;
    fn validate(&self, dev: &DeviceConfig) -> Result<(), FieldError>;
    fn check_against(&self, dev: &DeviceConfig, earlier: &[DeviceConfig]) -> Result<(), FieldError>;
    fn reaches(&self) -> Vec<Reach>;
    fn secret_fields(&self) -> &'static [&'static str];
    fn run(&self, dev: Arc<DeviceConfig>, ctx: DriverContext) -> DriverTask;
    fn browse(&self, dev: Arc<DeviceConfig>, node: Option<String>, env: DriverEnv) -> Option<DriverFuture<Value>>;
    fn import(&self, dev: Arc<DeviceConfig>, points: Vec<Value>, env: DriverEnv) -> Option<DriverFuture<Vec<Value>>>;
}

impl<D: Driver> ErasedDriver for D {
    fn name(&self) -> &'static str {
        D::NAME
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn eq_dyn(&self, other: &dyn Any) -> bool {
        other.downcast_ref::<D>() == Some(self)
    }

    fn fmt_dyn(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Debug::fmt(self, f)
    }

    fn to_json(&self) -> Map<String, Value> {
        object(self)
    }

    fn parse_tag(&self, fields: Map<String, Value>) -> Result<TagParams, FieldError> {
        parse_fields::<D::Tag>(fields).map(TagParams::new)
    }

    fn validate(&self, dev: &DeviceConfig) -> Result<(), FieldError> {
        // The driver's own checks may rely on every tag being its kind.
        for (i, t) in dev.tags.iter().enumerate() {
            if t.params.get::<D::Tag>().is_none() {
                return Err(FieldError::new(format!("tags[{i}]"), format!("is not a `{}` tag", D::NAME)));
            }
        }
        Driver::validate(self, dev)
    }

    fn check_against(&self, dev: &DeviceConfig, earlier: &[DeviceConfig]) -> Result<(), FieldError> {
        Driver::check_against(self, dev, earlier)
    }

    fn reaches(&self) -> Vec<Reach> {
        Driver::reaches(self)
    }

    fn secret_fields(&self) -> &'static [&'static str] {
        D::SECRET_FIELDS
    }

    fn run(&self, dev: Arc<DeviceConfig>, ctx: DriverContext) -> DriverTask {
        Box::pin(Driver::run(self, dev, ctx))
    }

    fn browse(&self, dev: Arc<DeviceConfig>, node: Option<String>, env: DriverEnv) -> Option<DriverFuture<Value>> {
        Driver::browse(self, dev, node, env)
    }

    fn import(&self, dev: Arc<DeviceConfig>, points: Vec<Value>, env: DriverEnv) -> Option<DriverFuture<Vec<Value>>> {
        Driver::import(self, dev, points, env)
    }
}

/// The object-safe face of a driver's tag fields.
trait ErasedTag: Send + Sync + 'static {
    fn as_any(&self) -> &dyn Any;
    fn eq_dyn(&self, other: &dyn Any) -> bool;
    fn fmt_dyn(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result;
    fn to_json(&self) -> Map<String, Value>;
}

impl<T: Serialize + PartialEq + Debug + Send + Sync + 'static> ErasedTag for T {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn eq_dyn(&self, other: &dyn Any) -> bool {
        other.downcast_ref::<T>() == Some(self)
    }

    fn fmt_dyn(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Debug::fmt(self, f)
    }

    fn to_json(&self) -> Map<String, Value> {
        object(self)
    }
}

impl DeviceConfig {
    /// The tags with their own fields as type `T` (the device driver's
    /// [`Driver::Tag`]); tags of another type are skipped (validation refuses them).
    pub fn tags_of<T: 'static>(&self) -> impl Iterator<Item = (&TagConfig, &T)> + '_ {
        self.tags.iter().filter_map(|t| t.params.get::<T>().map(|p| (t, p)))
    }
}
