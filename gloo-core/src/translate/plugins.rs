//! The plugin interface: each gateway feature shapes the Envoy resources of the objects it
//! cares about. Plugins run in a fixed order; a plugin's error on one object rejects that
//! object only.
//!
//! - upstream plugins shape a Upstream's Cluster (step 1);
//! - function and route plugins shape an Envoy Route for a destination, knowing the Function it
//!   names, if any (steps 2 and 3);
//! - filter plugins add the HTTP filters the routes need, each at a stage (step 4); the router
//!   always comes last.
use envoy_types::pb::envoy::{
    config::{cluster::v3::Cluster, route::v3::Route as EnvoyRoute},
    extensions::filters::network::http_connection_manager::v3::HttpFilter,
};
use proto::v1::{Destination, FunctionSpec, Route, UpstreamSpec};

use super::Context;

pub mod aws_lambda;

/// Where an HTTP filter goes in the chain; filters sort by stage, then by plugin order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// CORS, fault injection: before anything else.
    Early,
    /// Authentication, rate limits.
    Control,
    /// Function invocation (aws_lambda, ...): right before the router.
    Function,
}

/// Everything a plugin sees of a route it shapes.
pub struct RouteContext<'a> {
    pub namespace: &'a str,
    pub route: &'a Route,
}

pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;

    /// Step 1: shape the cluster of an upstream.
    fn upstream(
        &self,
        _ctx: &Context<'_>,
        _namespace: &str,
        _upstream: &UpstreamSpec,
        _cluster: &mut Cluster,
    ) -> Result<(), String> {
        Ok(())
    }

    /// Steps 2 and 3: shape the route for one destination; `function` is the Function the
    /// destination names, when it names one that exists.
    fn destination(
        &self,
        _ctx: &Context<'_>,
        _route: &RouteContext<'_>,
        _destination: &Destination,
        _function: Option<&FunctionSpec>,
        _out: &mut EnvoyRoute,
    ) -> Result<(), String> {
        Ok(())
    }

    /// Step 3: shape a route by its options.
    fn route(
        &self,
        _ctx: &Context<'_>,
        _route: &RouteContext<'_>,
        _out: &mut EnvoyRoute,
    ) -> Result<(), String> {
        Ok(())
    }

    /// Step 4: the HTTP filters this plugin needs on a listener whose routes are `routes`.
    fn http_filters(&self, _routes: &[&EnvoyRoute]) -> Vec<(Stage, HttpFilter)> {
        Vec::new()
    }
}

/// The plugins every translation runs, in order.
pub fn defaults() -> Vec<Box<dyn Plugin>> {
    vec![Box::new(aws_lambda::AwsLambda)]
}
