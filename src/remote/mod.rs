//! Remote layer (WIP)
pub mod ansible_cfg;
pub mod conn;
pub mod known_hosts;
pub mod pattern;
pub mod ssh_config;
