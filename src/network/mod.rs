//! Network plugins: one module per plugin, each listing its outputs and steps.

pub mod flannel;
