//! Helpers shared by the fuzz targets.

pub mod memory_kafka;
