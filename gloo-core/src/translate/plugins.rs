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
    config::{
        cluster::v3::Cluster,
        route::v3::{Route as EnvoyRoute, VirtualHost},
    },
    extensions::filters::network::http_connection_manager::v3::HttpFilter,
};
use proto::v1::{Destination, FunctionSpec, Route, UpstreamSpec, VirtualServiceSpec};

use super::{Context, Reporter};

pub mod gcf;

pub mod listener;
pub mod protocols;
pub mod resilience;
pub mod traffic;

#[cfg(test)]
mod tests;

pub mod rest;

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

    /// Step 1, for clusters that are not one Upstream's: clusters made from several objects
    /// (e.g. one per function host); errors go on the objects at fault. Asked for again only
    /// when a Function changed, an Upstream became or stopped being Rejected, or an object
    /// looked up through `ctx.get` changed: a scan of `ctx.input` beyond Functions goes
    /// unnoticed. A plugin may keep the encoded clusters it can reuse.
    fn clusters(
        &self,
        _ctx: &Context<'_>,
        _reporter: &mut Reporter,
    ) -> Vec<std::sync::Arc<crate::xds::XdsResource>> {
        Vec::new()
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

    /// Step 3, last: adjust the Envoy routes made from one route (one per matcher, match and
    /// options set), e.g. to narrow their match or to add routes right after them. They are
    /// `out[start..]`, the end of the virtual host's routes so far; the routes before `start`
    /// belong to other routes and stay as they are.
    fn matched(
        &self,
        _ctx: &Context<'_>,
        _route: &RouteContext<'_>,
        _out: &mut Vec<EnvoyRoute>,
        _start: usize,
    ) -> Result<(), String> {
        Ok(())
    }

    /// Step 4: the HTTP filters this plugin needs on a listener whose routes are `routes`.
    fn http_filters(&self, _routes: &[&EnvoyRoute]) -> Vec<(Stage, HttpFilter)> {
        Vec::new()
    }

    /// Step 3: shape a VirtualService's virtual host by its options, after its routes.
    fn virtual_host(
        &self,
        _ctx: &Context<'_>,
        _namespace: &str,
        _vs: &VirtualServiceSpec,
        _out: &mut VirtualHost,
    ) -> Result<(), String> {
        Ok(())
    }

    /// Step 4, seeing the whole virtual host (its own per-filter configuration too); by
    /// default the filters `http_filters` asks for its routes.
    fn vhost_filters(&self, vhost: &VirtualHost) -> Vec<(Stage, HttpFilter)> {
        let routes: Vec<&EnvoyRoute> = vhost.routes.iter().collect();
        self.http_filters(&routes)
    }
}

/// The plugins every translation runs, in order.
pub fn defaults() -> Vec<Box<dyn Plugin>> {
    vec![
        Box::new(aws_lambda::AwsLambda),
        Box::new(gcf::Gcf::default()),
        Box::new(rest::Rest),
        Box::new(resilience::Resilience),
        Box::new(traffic::Traffic),
        Box::new(protocols::Protocols),
    ]
}
