//! discovery-lambda's flags, on top of the common ones.
use std::time::Duration;

use discovery_runtime::{args::parse_duration, names::object_name, CommonArgs};

use crate::targets::RegionTarget;

#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "discovery-lambda",
    version,
    about = "Discovers AWS Lambda functions, versions and aliases and writes them to gloo-core as Functions",
    long_about = "Discovers AWS Lambda functions, versions and aliases and writes them to gloo-core \
as Functions.\n\nEvery Upstream of type aws in gloo-core's store is listed with its own region, \
endpoint and credentials (its secretRef's aws Secret, else its roleArn, else the standard AWS \
credential chain). Regions named with --region are listed with the standard chain (or \
--role-arn) and attach their Functions to an Upstream you name. Functions are named \
<upstream>-<function>[-<version or alias>] in the upstream's namespace; a route calls one with \
destination {upstream, function: <that name>}."
)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Also list this region, as REGION or REGION=NAMESPACE/UPSTREAM: its Functions belong to
    /// that Upstream (default default/aws-REGION), which you create. Repeatable.
    #[arg(long = "region", value_name = "REGION[=NS/UPSTREAM]")]
    pub regions: Vec<String>,

    /// Lambda API endpoint for the --region targets (e.g. http://127.0.0.1:5000); AWS
    /// Upstreams use their own `aws.endpoint`.
    #[arg(long)]
    pub endpoint_url: Option<String>,

    /// Role to assume (via STS) for the --region targets.
    #[arg(long)]
    pub role_arn: Option<String>,

    /// Only functions whose name starts with this.
    #[arg(long, default_value = "")]
    pub name_prefix: String,

    /// Only functions carrying this tag, as KEY=VALUE (or KEY for any value); repeat to
    /// require several. Costs one ListTags call per function.
    #[arg(long = "tag", value_name = "KEY[=VALUE]")]
    pub tags: Vec<String>,

    /// Do not list aliases (saves one ListAliases call per function).
    #[arg(long)]
    pub no_aliases: bool,

    /// How many upstreams/regions, and how many per-function calls of one, run at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,

    /// The longest wait between polls while nothing changes (the shortest is --interval).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub max_interval: Duration,
}

impl Args {
    pub fn region_targets(&self) -> anyhow::Result<Vec<RegionTarget>> {
        self.regions
            .iter()
            .map(|r| parse_region(r).map_err(|e| anyhow::anyhow!("--region {r:?}: {e}")))
            .collect()
    }

    pub fn tag_filters(&self) -> anyhow::Result<Vec<(String, Option<String>)>> {
        self.tags
            .iter()
            .map(|t| match t.split_once('=') {
                Some(("", _)) => anyhow::bail!("--tag {t:?}: the key is empty"),
                Some((k, v)) => Ok((k.to_string(), Some(v.to_string()))),
                None if t.is_empty() => anyhow::bail!("--tag: the key is empty"),
                None => Ok((t.clone(), None)),
            })
            .collect()
    }
}

pub fn parse_region(s: &str) -> Result<RegionTarget, String> {
    let (region, target) = match s.split_once('=') {
        Some((r, t)) => (r, Some(t)),
        None => (s, None),
    };
    if region.is_empty()
        || !region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err("the region must look like us-east-1".into());
    }
    let (namespace, upstream) = match target {
        None => ("default".to_string(), object_name(&["aws", region])),
        Some(t) => match t.split_once('/') {
            Some((ns, up)) if !ns.is_empty() && !up.is_empty() => (ns.into(), up.into()),
            _ => return Err("the upstream must be NAMESPACE/NAME".into()),
        },
    };
    Ok(RegionTarget {
        region: region.into(),
        namespace,
        upstream,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_name_their_upstream() {
        let r = parse_region("eu-west-1").unwrap();
        assert_eq!(
            (r.region.as_str(), r.namespace.as_str(), r.upstream.as_str()),
            ("eu-west-1", "default", "aws-eu-west-1")
        );
        let r = parse_region("us-east-1=team/lambdas").unwrap();
        assert_eq!(
            (r.namespace.as_str(), r.upstream.as_str()),
            ("team", "lambdas")
        );
        assert!(parse_region("US East").is_err());
        assert!(parse_region("us-east-1=nope").is_err());
    }

    #[test]
    fn tags_parse_with_and_without_values() {
        use clap::Parser;
        let a = Args::parse_from(["d", "--tag", "team=web", "--tag", "public"]);
        assert_eq!(
            a.tag_filters().unwrap(),
            vec![("team".into(), Some("web".into())), ("public".into(), None)]
        );
        let a = Args::parse_from(["d", "--tag", "=x"]);
        assert!(a.tag_filters().is_err());
    }
}
