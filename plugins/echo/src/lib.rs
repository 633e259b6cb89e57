//! placeholder until the plugin issue
