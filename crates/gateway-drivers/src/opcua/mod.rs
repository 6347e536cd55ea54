//! The OPC UA client driver (`driver = "opcua"`): one session per device
//! to an OPC UA server, values by subscription (default) or by polling,
//! writes on command, and browsing the server's address space to import
//! tags. The protocol is the `async-opcua` crate (client only); this module
//! adds what a plant needs around it, above all a supervisor of its own.
//!
//! **Connecting.** `endpoint` is `opc.tcp://host:port/path`. The security
//! policy (`None`, `Basic256Sha256`, `Aes128_Sha256_RsaOaep`,
//! `Aes256_Sha256_RsaPss`) and mode (`Sign`, `SignAndEncrypt`) must be one
//! the server offers; if not, the device's status lists what it offers. The
//! client's certificate and key are `certificate`/`private_key`, or else
//! made on first use (RSA 2048, a year) and kept in
//! `<data_dir>/opcua/pki/own/cert.der` and `private/private.pem`, shared by
//! every OPC UA device of the gateway. The server's certificate is trusted
//! only explicitly: by `server_certificate_thumbprint` (its SHA-1, which the
//! driver then files in `pki/trusted/`), or by an operator moving it from
//! `pki/rejected/` (where an untrusted one is filed, and the device's status
//! says so) to `pki/trusted/`. The user is anonymous, `username`/`password`
//! (the password is a secret: never logged, never in an error, `***` in the
//! API), or `user_certificate`/`user_private_key`. A refused login is said
//! in the device's status in words (`the server refused the session for
//! user "op": BadUserAccessDenied (wrong username or password ...)`).
//!
//! **Setting up.** At every connect the driver reads the server's
//! namespace array (for `nsu=` node ids) and each node's DataType and
//! ValueRank. A node that is unknown, holds an array, or is of another type
//! than the tag's `data_type` turns that tag alone bad (`not_found`,
//! `not_supported`, `type_mismatch`), named in the device's status; the
//! other tags go on. In subscribe mode the driver then creates one
//! subscription (`publishing_interval_ms`, `keep_alive_count`) and one
//! monitored item per tag (`sampling_interval_ms`, `queue_size`, and an
//! absolute `deadband` on numeric nodes); a node the server refuses to
//! monitor turns its own tag bad. Tags that failed are tried again at the
//! next connect.
//!
//! **Values.** Every built-in scalar type maps to a value: Boolean to
//! bool; SByte, Int16, Int32, Int64 to i64; Byte, UInt16, UInt32, UInt64 to
//! u64; Float and Double to f64; String, LocalizedText (its text) and Guid
//! to text; DateTime to RFC 3339 text in UTC; ByteString to bytes. Standard
//! subtypes follow their base (Duration is a Double, UtcTime a DateTime, an
//! enumeration an Int32). A value's time is its source timestamp (else the
//! server's). Its status code becomes the quality: Good; Uncertain with a
//! reason (`last_known_value`, `substituted`, `sensor_failure`, ...); Bad
//! with a reason (`not_found`, `access_denied`, `type_mismatch`,
//! `device_failure`, `sensor_failure`, `out_of_range`, `timeout`, ...).
//! Arrays are refused: a `data_type` such as `Double[]` at validation, an
//! array node at connect.
//!
//! **Supervision.** The session never reconnects by itself: the driver
//! watches it (its `supervisor` module, a state machine tested without a server). A lost connection, a failed session
//! keep-alive (a read of the server's state every publishing interval,
//! answered within `timeout_ms`) or a subscription silent past its
//! keep-alive period (publishing interval × (keep-alive count + 1) +
//! timeout: the watchdog) turns every tag bad with the reason, within two
//! publishing intervals plus the timeout of losing the server; the driver
//! then throws the session away and builds a new one, subscription and
//! monitored items included, after an exponential backoff with ±20% jitter
//! (`reconnect_min_ms` doubling to `reconnect_max_ms`, the first retry
//! after a working connection at `reconnect_min_ms`). A restarted server,
//! which knows no old session, is simply connected to anew.
//!
//! **Poll mode.** `mode = "poll"` reads every tag each `poll_interval_ms`,
//! `max_nodes_per_request` nodes a request, with the device's or tag's
//! `deadband` applied here and a refresh every [`REFRESH_POLLS`] polls, as
//! the Modbus driver does.
//!
//! **Commands.** A command on a writable tag is a Write of the value
//! converted to the node's data type (its DataType attribute, or the type of
//! the value it holds), with range checks: a value that does not fit is
//! `rejected` before anything is sent. The server's refusal is `failed`
//! with its status code in the message (`the server refused the write:
//! BadUserAccessDenied`, `BadTypeMismatch`, `BadNotWritable`).
//!
//! **Browse and import** ([`Driver::browse`], [`Driver::import`]): a
//! connection of their own lists a node's children (node id, browse name,
//! display name, node class, data type, array or not, access level for the
//! gateway's user, whether it has children), and turns chosen variables
//! into tags (`name` from the browse name, `data_type` the node's,
//! `writable` what the server lets the user do, each overridable).
//!
//! **Stopping.** A stopped driver closes its session (the server deletes
//! its subscription) and publishes its tags `bad` (`shutdown`).

mod browse;
mod config;
mod connect;
mod device;
mod supervisor;
mod value;

use std::sync::Arc;

pub use crate::point::REFRESH_POLLS;
pub use config::{DataType, Mode, OpcUaConfig, OpcUaTagConfig, SecurityMode, SecurityPolicy};

use gateway_model::FieldError;
use serde_json::Value;

use crate::config::DeviceConfig;
use crate::driver::{Driver, DriverContext, DriverEnv, DriverFuture};
use crate::security::Reach;

impl Driver for OpcUaConfig {
    const NAME: &'static str = "opcua";
    const SECRET_FIELDS: &'static [&'static str] = &["password"];
    type Tag = OpcUaTagConfig;

    fn validate(&self, dev: &DeviceConfig) -> Result<(), FieldError> {
        config::validate(dev, self)
    }

    fn reaches(&self) -> Vec<Reach> {
        let host = config::endpoint_host(&self.endpoint).unwrap_or(&self.endpoint);
        vec![Reach::Host { field: "endpoint", host: host.to_owned() }]
    }

    fn run(&self, dev: Arc<DeviceConfig>, ctx: DriverContext) -> impl Future<Output = ()> + Send + 'static {
        device::run(self.clone(), dev, ctx)
    }

    fn browse(&self, _dev: Arc<DeviceConfig>, node: Option<String>, env: DriverEnv) -> Option<DriverFuture<Value>> {
        Some(Box::pin(browse::browse(self.clone(), node, env.data_dir)))
    }

    fn import(&self, _dev: Arc<DeviceConfig>, points: Vec<Value>, env: DriverEnv) -> Option<DriverFuture<Vec<Value>>> {
        Some(Box::pin(browse::import(self.clone(), points, env.data_dir)))
    }
}
