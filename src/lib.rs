//! Portcullis: a security gate for small self-hosted systems.
//! See ARCHITECTURE.md for the map.

pub mod acs;
pub mod cli;
pub mod config;
pub mod core;
pub mod daemon;
pub mod export;
pub mod flow;
pub mod hooks;
pub mod mail;
pub mod model;
pub mod ssh;
pub mod store;
pub mod web;
