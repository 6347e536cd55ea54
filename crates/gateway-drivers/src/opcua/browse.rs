//! Browse to import: the children of a node, with what an engineer needs
//! to pick tags (node class, data type, access level), and chosen variables
//! turned into tags. Each call makes a connection of its own (with the
//! device's endpoint, security and identity) and closes it, so it works
//! whether or not the device is running.

use std::path::PathBuf;
use std::time::Duration;

use opcua::client::Session;
use opcua::types::{
    AttributeId, BrowseDescription, BrowseDirection, BrowseResultMask, ByteString, DataValue, NodeClass, NodeId,
    ReferenceDescription, ReferenceTypeId, StatusCode, TimestampsToReturn, Variant,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::{Namespace, NodeRef, OpcUaConfig};
use super::connect::{Failure, Link, connect};
use super::value::builtin_of;
use crate::driver::BrowseError;

/// Most children one browse returns (a folder with more is cut, and says so).
const MAX_CHILDREN: usize = 10_000;

/// Where browsing starts: the Objects folder.
pub(crate) const OBJECTS: &str = "i=85";

impl From<Failure> for BrowseError {
    fn from(f: Failure) -> Self {
        BrowseError::Device(f.message)
    }
}

fn status_error(what: &str, s: StatusCode) -> BrowseError {
    match s {
        StatusCode::BadNodeIdUnknown | StatusCode::BadNodeIdInvalid => BrowseError::NotFound(format!("{what}: {s}")),
        s => BrowseError::Device(format!("{what}: {s}")),
    }
}

async fn with_link<T>(
    cfg: &OpcUaConfig,
    data_dir: Option<PathBuf>,
    f: impl AsyncFnOnce(&Session) -> Result<T, BrowseError>,
) -> Result<T, BrowseError> {
    let link: Link = connect(cfg, data_dir.as_deref()).await?;
    let r = tokio::time::timeout(cfg.timeout() * 4, f(&link.session)).await;
    link.close(Duration::from_millis(500)).await;
    r.map_err(|_| BrowseError::Device(format!("the server did not answer within {} ms", cfg.timeout_ms * 4)))?
}

/// The node of `text`, resolved on this session.
async fn resolve(session: &Session, text: &str) -> Result<NodeId, BrowseError> {
    let node: NodeRef = text.parse().map_err(BrowseError::Invalid)?;
    let uri = match &node.ns {
        Namespace::Uri(u) => Some(u.clone()),
        Namespace::Index(_) => None,
    };
    let index = match &uri {
        Some(u) => Some(
            session
                .get_namespace_index(u)
                .await
                .map_err(|_| BrowseError::NotFound(format!("the server has no namespace {u:?}")))?,
        ),
        None => None,
    };
    node.resolve(|_| index).ok_or_else(|| BrowseError::NotFound(format!("cannot resolve {text:?}")))
}

fn description(node: &NodeId) -> BrowseDescription {
    BrowseDescription {
        node_id: node.clone(),
        browse_direction: BrowseDirection::Forward,
        reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
        include_subtypes: true,
        node_class_mask: 0,
        result_mask: BrowseResultMask::All as u32,
    }
}

/// The children of `node`, following continuation points up to
/// [`MAX_CHILDREN`]; whether the list was cut there.
async fn children(session: &Session, node: &NodeId) -> Result<(Vec<ReferenceDescription>, bool), BrowseError> {
    let first =
        session.browse(&[description(node)], 0, None).await.map_err(|e| status_error("browse failed", e.status()))?;
    let mut result = first.into_iter().next().ok_or_else(|| BrowseError::Device("an empty browse answer".into()))?;
    if !result.status_code.is_good() {
        return Err(status_error(&format!("cannot browse {node}"), result.status_code));
    }
    let mut refs = result.references.take().unwrap_or_default();
    while !result.continuation_point.is_null_or_empty() {
        let next: Vec<ByteString> = vec![result.continuation_point.clone()];
        if refs.len() >= MAX_CHILDREN {
            let _ = session.browse_next(true, &next).await;
            return Ok((refs, true));
        }
        let r = session.browse_next(false, &next).await.map_err(|e| status_error("browse next failed", e.status()))?;
        result = r.into_iter().next().ok_or_else(|| BrowseError::Device("an empty browse answer".into()))?;
        refs.extend(result.references.take().unwrap_or_default());
    }
    Ok((refs, false))
}

/// Whether each of `nodes` has children: one browse of them all, one
/// reference each (the continuation points released at once).
async fn have_children(session: &Session, nodes: &[NodeId], chunk: usize) -> Vec<bool> {
    let mut out = Vec::with_capacity(nodes.len());
    for part in nodes.chunks(chunk.max(1)) {
        let descs: Vec<BrowseDescription> = part.iter().map(description).collect();
        let results = session.browse(&descs, 1, None).await.unwrap_or_default();
        let points: Vec<ByteString> =
            results.iter().map(|r| r.continuation_point.clone()).filter(|c| !c.is_null_or_empty()).collect();
        if !points.is_empty() {
            let _ = session.browse_next(true, &points).await;
        }
        out.extend(
            (0..part.len())
                .map(|i| results.get(i).is_some_and(|r| r.references.as_ref().is_some_and(|v| !v.is_empty()))),
        );
    }
    out
}

/// What a variable is, from its DataType, ValueRank and UserAccessLevel.
struct VarInfo {
    data_type: Option<String>,
    builtin: Option<&'static str>,
    array: bool,
    read: bool,
    write: bool,
}

fn var_info(dt: Option<&DataValue>, rank: Option<&DataValue>, access: Option<&DataValue>) -> VarInfo {
    let node = match dt.and_then(|d| d.value.as_ref()) {
        Some(Variant::NodeId(n)) => Some((**n).clone()),
        _ => None,
    };
    let builtin = node.as_ref().and_then(builtin_of).map(|t| t.name());
    let array = matches!(rank.and_then(|r| r.value.as_ref()), Some(Variant::Int32(r)) if *r >= 0);
    let bits = match access.and_then(|a| a.value.as_ref()) {
        Some(Variant::Byte(b)) => *b,
        _ => 0,
    };
    VarInfo {
        data_type: builtin.map(str::to_owned).or_else(|| node.map(|n| n.to_string())),
        builtin,
        array,
        read: bits & 1 != 0,
        write: bits & 2 != 0,
    }
}

/// DataType, ValueRank and UserAccessLevel of `nodes`, three values each.
async fn read_vars(session: &Session, nodes: &[NodeId], chunk: usize) -> Result<Vec<DataValue>, BrowseError> {
    let mut out = Vec::with_capacity(nodes.len() * 3);
    for part in nodes.chunks((chunk / 3).max(1)) {
        let ids: Vec<_> = part
            .iter()
            .flat_map(|n| {
                [AttributeId::DataType, AttributeId::ValueRank, AttributeId::UserAccessLevel].map(|a| {
                    opcua::types::ReadValueId {
                        node_id: n.clone(),
                        attribute_id: a as u32,
                        index_range: Default::default(),
                        data_encoding: Default::default(),
                    }
                })
            })
            .collect();
        let v = session
            .read(&ids, TimestampsToReturn::Neither, 0.0)
            .await
            .map_err(|e| status_error("cannot read the variables' attributes", e.status()))?;
        out.extend(v);
    }
    Ok(out)
}

/// `GET .../browse?node=...`: the children of `node` (default: the Objects folder).
pub(crate) async fn browse(
    cfg: OpcUaConfig,
    node: Option<String>,
    data_dir: Option<PathBuf>,
) -> Result<Value, BrowseError> {
    let text = node.filter(|n| !n.is_empty()).unwrap_or_else(|| OBJECTS.to_owned());
    text.parse::<NodeRef>().map_err(BrowseError::Invalid)?;
    let chunk = cfg.max_nodes_per_request;
    with_link(&cfg, data_dir, async |session| {
        let start = resolve(session, &text).await?;
        let (refs, cut) = children(session, &start).await?;
        let ids: Vec<NodeId> = refs.iter().map(|r| r.node_id.node_id.clone()).collect();
        let vars: Vec<NodeId> =
            refs.iter().filter(|r| r.node_class == NodeClass::Variable).map(|r| r.node_id.node_id.clone()).collect();
        let attrs = read_vars(session, &vars, chunk).await?;
        let has_children = have_children(session, &ids, chunk).await;
        let mut var_index = 0;
        let list: Vec<Value> = refs
            .iter()
            .zip(has_children)
            .map(|(r, kids)| {
                let mut v = json!({
                    "node_id": r.node_id.node_id.to_string(),
                    "browse_name": r.browse_name.to_string(),
                    "display_name": r.display_name.text.as_ref(),
                    "node_class": format!("{:?}", r.node_class),
                    "has_children": kids,
                });
                if r.node_class == NodeClass::Variable {
                    let k = var_index * 3;
                    var_index += 1;
                    let info = var_info(attrs.get(k), attrs.get(k + 1), attrs.get(k + 2));
                    v["data_type"] = json!(info.data_type);
                    v["array"] = json!(info.array);
                    v["access_level"] = json!({"read": info.read, "write": info.write});
                    v["importable"] = json!(info.builtin.is_some() && !info.array);
                }
                v
            })
            .collect();
        Ok(json!({ "node": text, "children": list, "truncated": cut }))
    })
    .await
}

/// One point to import, as the API's body lists it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pick {
    node_id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    writable: Option<bool>,
}

/// A tag name from a browse name: the characters a tag name allows, others as `_`.
fn tag_name(browse_name: &str) -> String {
    let name = browse_name.rsplit_once(':').map_or(browse_name, |(_, n)| n);
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '#') { c } else { '_' })
        .collect();
    while out.contains("..") {
        out = out.replace("..", ".");
    }
    let out = out.trim_matches('.').to_owned();
    if out.is_empty() { "node".to_owned() } else { out }
}

/// `POST .../import`: the chosen variables as tags (`name` defaults to the
/// browse name, `writable` to what the server allows this user, the
/// `data_type` is the node's).
pub(crate) async fn import(
    cfg: OpcUaConfig,
    points: Vec<Value>,
    data_dir: Option<PathBuf>,
) -> Result<Vec<Value>, BrowseError> {
    let picks: Vec<Pick> = points
        .into_iter()
        .enumerate()
        .map(|(i, p)| serde_json::from_value(p).map_err(|e| BrowseError::Invalid(format!("nodes[{i}]: {e}"))))
        .collect::<Result<_, _>>()?;
    if picks.is_empty() {
        return Err(BrowseError::Invalid("no nodes to import".into()));
    }
    for (i, p) in picks.iter().enumerate() {
        p.node_id.parse::<NodeRef>().map_err(|e| BrowseError::Invalid(format!("nodes[{i}].node_id: {e}")))?;
    }
    let chunk = cfg.max_nodes_per_request;
    with_link(&cfg, data_dir, async |session| {
        let mut nodes = Vec::with_capacity(picks.len());
        for p in &picks {
            nodes.push(resolve(session, &p.node_id).await?);
        }
        let mut names = Vec::with_capacity(nodes.len() * 2);
        for part in nodes.chunks((chunk / 2).max(1)) {
            let ids: Vec<_> = part
                .iter()
                .flat_map(|n| {
                    [AttributeId::NodeClass, AttributeId::BrowseName].map(|a| opcua::types::ReadValueId {
                        node_id: n.clone(),
                        attribute_id: a as u32,
                        index_range: Default::default(),
                        data_encoding: Default::default(),
                    })
                })
                .collect();
            let v = session
                .read(&ids, TimestampsToReturn::Neither, 0.0)
                .await
                .map_err(|e| status_error("cannot read the nodes", e.status()))?;
            names.extend(v);
        }
        let attrs = read_vars(session, &nodes, chunk).await?;
        let mut tags = Vec::with_capacity(picks.len());
        for (i, p) in picks.iter().enumerate() {
            let (Some(class), Some(name)) = (names.get(2 * i), names.get(2 * i + 1)) else {
                return Err(BrowseError::Invalid(format!(
                    "the server answered {} of {} reads of the nodes' class and name",
                    names.len(),
                    2 * picks.len()
                )));
            };
            if let Some(s) = class.status.filter(|s| !s.is_good()) {
                return Err(status_error(&format!("nodes[{i}] ({})", p.node_id), s));
            }
            let is_var = matches!(&class.value, Some(Variant::Int32(c)) if *c == NodeClass::Variable as i32);
            if !is_var {
                return Err(BrowseError::Invalid(format!("nodes[{i}] ({}) is not a variable", p.node_id)));
            }
            let info = var_info(attrs.get(3 * i), attrs.get(3 * i + 1), attrs.get(3 * i + 2));
            if info.array {
                return Err(BrowseError::Invalid(format!(
                    "nodes[{i}] ({}) holds an array; a tag holds one scalar value",
                    p.node_id
                )));
            }
            let browse_name = match &name.value {
                Some(Variant::QualifiedName(q)) => q.name.as_ref().to_owned(),
                _ => p.node_id.clone(),
            };
            let mut tag = json!({
                "name": p.name.clone().unwrap_or_else(|| tag_name(&browse_name)),
                "node_id": p.node_id,
                "writable": p.writable.unwrap_or(info.write),
            });
            if let Some(t) = info.builtin {
                tag["data_type"] = json!(t);
            }
            tags.push(tag);
        }
        Ok(tags)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browse_names_become_valid_tag_names() {
        assert_eq!(tag_name("2:Line 1 Temp(°C)"), "Line_1_Temp__C_");
        assert_eq!(tag_name("Motor.Speed"), "Motor.Speed");
        assert_eq!(tag_name("..a..b."), "a.b");
        assert_eq!(tag_name(""), "node");
    }
}
