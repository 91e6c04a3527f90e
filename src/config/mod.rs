//! Configuration: `schema` is the hjson format, `load` turns it into
//! resolved settings (addresses parsed, paths absolute, rules checked).

pub mod detection;
pub mod export;
pub mod hjson;
pub mod load;
pub mod menu;
pub mod playbooks;
pub mod time;
pub mod risk;
pub mod schema;
pub mod smtp;
pub mod webhooks;

pub use load::{load, load_file, locate, Settings, DEFAULT_CONFIG};
