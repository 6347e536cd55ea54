//! Test and load code of the edge gateway, kept out of the libraries and
//! used by their tests, their benches and `edge-gateway bench`:
//!
//! * [`child`]: the one child-process protocol (a job in a fresh copy of the
//!   executable, its report back as a JSON line, a time-out);
//! * [`procstat`]: `/proc` sampling of memory and CPU;
//! * [`histogram`]: latency recording and percentiles;
//! * load generators: [`bus`] (the frame bus), [`modbus`] (a farm of
//!   in-process Modbus servers polled by the real driver manager), [`opcua`]
//!   (`asyncua` servers subscribed to by the real driver manager), [`mqtt`]
//!   (the MQTT connector against a real broker), [`north`] (the whole
//!   plant-to-broker job: Modbus servers, the gateway and mosquitto as
//!   processes of their own, and the data's age at the subscriber), [`nats`]
//!   (the NATS connector into a JetStream node or a 3-node cluster);
//! * test peers: [`mosquitto`] (a broker launcher and test certificates),
//!   [`nats_server`] (a JetStream node or a 3-node cluster, and reading a
//!   stream back), [`postgres`] (a PostgreSQL server that can be stopped and
//!   started again), [`peer`] (a Python server from PyPI, and
//!   [`peer::TestGateway`]: a bus and the real driver manager for the driver
//!   tests);
//! * [`free_port`], [`wait_until`] and [`wait_until_blocking`] for every test.
//!
//! A library must never depend on this crate except as a dev-dependency, and
//! this crate uses the libraries only through their public API, as the
//! gateway does: a load test measures the code that ships, not a test double.

pub mod bus;
pub mod child;
mod harness;
pub mod histogram;
pub mod modbus;
pub mod mosquitto;
pub mod mqtt;
pub mod nats;
pub mod nats_server;
pub mod north;
pub mod opcua;
pub mod peer;
pub mod postgres;
pub mod procstat;

pub use harness::{closed_by_peer, free_port, poll_window, wait_until, wait_until_blocking};
