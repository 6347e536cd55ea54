//! The Connector shape: a connector *is* its config type. The type parses
//! from its `[[connectors]]` table, checks itself ([`Connector::validate`]),
//! and builds the task that runs it ([`Connector::build`]). The rest of the
//! gateway holds it as [`ConnectorParams`], which hides the type but keeps
//! what the gateway needs (kind, equality, a JSON form, building), and finds
//! it by name through [`CONNECTORS`](crate::CONNECTORS), built from
//! [`ConnectorEntry::of`].
//!
//! Nothing here knows a protocol: a connector's module folder brings its
//! config type and one registry line.

use std::any::Any;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use gateway_bus::BusError;
use gateway_model::{FieldError, parse_fields};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::ConnectorContext;

/// A connector is its config type: it validates itself and builds its task.
///
/// A toy connector that counts the readings it receives as delivered, built
/// on a memory bus the way [`Connectors::start`](crate::Connectors::start)
/// builds every connector:
///
/// ```
/// use std::sync::Arc;
///
/// use gateway_bus::{Bus, BusMetrics, BusSettings, Persistence, Shutdown, SubscribeOptions};
/// use gateway_connectors::metrics::ConnectorLabel;
/// use gateway_connectors::{Connector, ConnectorContext, ConnectorError, ConnectorMetrics, ConnectorTask};
/// use gateway_model::{Batch, DataFrame, FieldError, Frame, Quality, TagId, Value};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Counter {
///     /// The task ends after this many readings.
///     limit: u64,
/// }
///
/// impl Connector for Counter {
///     const KIND: &'static str = "counter";
///
///     fn validate(&self) -> Result<(), FieldError> {
///         if self.limit == 0 { Err(FieldError::new("limit", "must be at least 1")) } else { Ok(()) }
///     }
///
///     fn build(&self, name: &str, mut ctx: ConnectorContext) -> Result<ConnectorTask, ConnectorError> {
///         // Subscribe here, not in the task, so nothing published after `build` is missed.
///         let mut sub = ctx.bus.subscribe(SubscribeOptions::durable(format!("counter-{name}")))?;
///         let delivered = ctx.metrics.values_acked.get_or_create(&ConnectorLabel { connector: name.into() }).clone();
///         let limit = self.limit;
///         Ok(Box::pin(async move {
///             while delivered.get() < limit {
///                 tokio::select! {
///                     _ = ctx.shutdown.wait() => break,
///                     d = sub.recv() => {
///                         let Ok(d) = d else { break };
///                         delivered.inc_by(d.frames().filter(|(_, f)| f.as_data().is_some()).count() as u64);
///                         // The target has it: move the durable cursor on.
///                         sub.ack(d.end_seq()).unwrap();
///                     }
///                 }
///             }
///         }))
///     }
/// }
///
/// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// rt.block_on(async {
///     let settings = BusSettings { persistence: Persistence::Memory, ..BusSettings::memory_optimized() };
///     let bus = Bus::open(settings, Arc::new(BusMetrics::unregistered())).unwrap();
///     let metrics = Arc::new(ConnectorMetrics::unregistered());
///     let (_stop, shutdown) = Shutdown::new();
///     let ctx = ConnectorContext {
///         bus: bus.clone(),
///         shutdown,
///         metrics: metrics.clone(),
///         data_dir: std::env::temp_dir(),
///         gateway: "line1-gw".into(),
///     };
///     assert!(Counter { limit: 0 }.validate().is_err());
///     let task = Counter { limit: 1 }.build("demo", ctx).unwrap();
///     let frame = Frame::Data(DataFrame::new(TagId::new("line1.temp").unwrap(), Value::F64(21.5), Quality::GOOD, 0));
///     bus.publish(Arc::new(Batch::from(vec![frame]))).await.unwrap();
///     task.await;
///     assert_eq!(metrics.values_acked.get_or_create(&ConnectorLabel { connector: "demo".into() }).get(), 1);
/// });
/// ```
pub trait Connector: Serialize + DeserializeOwned + Clone + PartialEq + Debug + Send + Sync + 'static {
    /// The name in `kind = "..."`.
    const KIND: &'static str;

    /// Checks what the types alone cannot; paths relative to the connector's table.
    fn validate(&self) -> Result<(), FieldError>;

    /// Subscribes to the bus (synchronously, so nothing published after
    /// [`Connectors::start`](crate::Connectors::start) returns is missed) and
    /// returns the task that runs the connector until `ctx.shutdown` fires.
    fn build(&self, name: &str, ctx: ConnectorContext) -> Result<ConnectorTask, ConnectorError>;
}

/// A running connector: the future [`Connector::build`] returns, which
/// [`Connectors::start`](crate::Connectors::start) spawns.
pub type ConnectorTask = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Why a connector could not be built; it is logged and the connector does not start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The bus refused the subscription (a name in use, or the bus is closed).
    #[error("cannot subscribe to the bus: {0}")]
    Subscribe(#[from] BusError),
    /// The configuration cannot be run as it is (a TLS file that changed
    /// since the configuration was checked, for instance).
    #[error("invalid configuration: {0}")]
    Config(#[from] FieldError),
}

/// What [`ConnectorParams`] needs of a connector type, object-safe; every
/// [`Connector`] has it.
trait ErasedConnector: Debug + Send + Sync + 'static {
    fn kind(&self) -> &'static str;
    fn validate(&self) -> Result<(), FieldError>;
    fn build(&self, name: &str, ctx: ConnectorContext) -> Result<ConnectorTask, ConnectorError>;
    fn to_json(&self) -> Value;
    fn same_as(&self, other: &dyn ErasedConnector) -> bool;
    fn as_any(&self) -> &dyn Any;
}

impl<T: Connector> ErasedConnector for T {
    fn kind(&self) -> &'static str {
        T::KIND
    }

    fn validate(&self) -> Result<(), FieldError> {
        Connector::validate(self)
    }

    fn build(&self, name: &str, ctx: ConnectorContext) -> Result<ConnectorTask, ConnectorError> {
        Connector::build(self, name, ctx)
    }

    fn to_json(&self) -> Value {
        // A derived Serialize of a config struct does not fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    fn same_as(&self, other: &dyn ErasedConnector) -> bool {
        other.as_any().downcast_ref::<T>().is_some_and(|o| o == self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// One connector's own fields, of whichever [`Connector`] type its `kind`
/// names. Cheap to clone (shared); compares equal when the kinds and all
/// fields are equal.
#[derive(Clone)]
pub struct ConnectorParams(Arc<dyn ErasedConnector>);

impl ConnectorParams {
    /// Wraps a config that has been validated (the registry and
    /// [`ConnectorConfig::new`](crate::ConnectorConfig::new) do that first).
    pub(crate) fn new<T: Connector>(config: T) -> Self {
        ConnectorParams(Arc::new(config))
    }

    /// The name in `kind = "..."`.
    pub fn kind(&self) -> &'static str {
        self.0.kind()
    }

    /// The typed config, if it is a `T`.
    pub fn get<T: Connector>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref::<T>()
    }

    /// The connector's own fields as JSON (without `name`, `kind` and `enabled`),
    /// secrets included.
    pub fn to_json(&self) -> Value {
        self.0.to_json()
    }

    /// Checks the fields again, files included (they may have changed since parsing).
    pub fn validate(&self) -> Result<(), FieldError> {
        self.0.validate()
    }

    pub(crate) fn build(&self, name: &str, ctx: ConnectorContext) -> Result<ConnectorTask, ConnectorError> {
        self.0.build(name, ctx)
    }
}

impl PartialEq for ConnectorParams {
    fn eq(&self, other: &Self) -> bool {
        self.0.same_as(&*other.0)
    }
}

impl Debug for ConnectorParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One line of the registry: a `kind` name and how to parse its fields.
#[derive(Clone, Copy)]
pub struct ConnectorEntry {
    /// The name in `kind = "..."`.
    pub kind: &'static str,
    parse: fn(Map<String, Value>) -> Result<ConnectorParams, FieldError>,
}

impl ConnectorEntry {
    /// The entry of connector type `T`.
    pub const fn of<T: Connector>() -> Self {
        ConnectorEntry { kind: T::KIND, parse: parse_and_validate::<T> }
    }

    /// Reads a connector table without `name`, `kind` and `enabled` as
    /// exactly this kind's fields, and validates them.
    pub fn parse(&self, fields: Map<String, Value>) -> Result<ConnectorParams, FieldError> {
        (self.parse)(fields)
    }
}

impl Debug for ConnectorEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorEntry").field("kind", &self.kind).finish_non_exhaustive()
    }
}

fn parse_and_validate<T: Connector>(fields: Map<String, Value>) -> Result<ConnectorParams, FieldError> {
    let config: T = parse_fields(fields)?;
    config.validate()?;
    Ok(ConnectorParams::new(config))
}
