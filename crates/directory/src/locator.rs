//! Which relay node holds a device. One configured node is the default;
//! a multi-node locator (Redis leases) implements the same trait.

use crate::{DirectoryError, NodeId};
use async_trait::async_trait;
use edge_core::DeviceId;

/// Finds the relay node for a device.
#[async_trait]
pub trait NodeLocator: Send + Sync {
    /// The node that holds `device`'s tunnel, if any is known.
    async fn locate(&self, device: DeviceId) -> Result<Option<NodeId>, DirectoryError>;
    /// Every node, for listings.
    async fn nodes(&self) -> Result<Vec<NodeId>, DirectoryError>;
    /// The node and connect time (Unix ms) of each of `devices`, in order,
    /// in one round trip; `None` when this locator cannot say without
    /// asking the nodes (a single node: ask it).
    async fn locate_many(
        &self,
        _devices: &[DeviceId],
    ) -> Result<Option<Vec<Option<(NodeId, i64)>>>, DirectoryError> {
        Ok(None)
    }
}

/// A single relay node that holds every tunnel.
#[derive(Debug, Clone)]
pub struct StaticNode(pub NodeId);

#[async_trait]
impl NodeLocator for StaticNode {
    async fn locate(&self, _device: DeviceId) -> Result<Option<NodeId>, DirectoryError> {
        Ok(Some(self.0.clone()))
    }
    async fn nodes(&self) -> Result<Vec<NodeId>, DirectoryError> {
        Ok(vec![self.0.clone()])
    }
}
