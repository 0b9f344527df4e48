//! The recorder of delivery attempts: deliveries hand their attempt to a [`Batcher`], which
//! records those gathered meanwhile in one transaction ([`Store::record_attempts`]). A
//! delivery's session slot is held until its attempt is recorded, as before.

use super::batcher::{Batch, Batcher};
use crate::error::Result;
use crate::store::Store;
use crate::store::messages_attempts::AttemptRecord;

/// Delivery attempts, recorded together.
#[derive(Debug)]
pub(super) struct Attempts;

/// The recorder's batcher.
pub(super) type Recorder = Batcher<Attempts>;

impl Batch for Attempts {
    type Job = AttemptRecord;
    type Answer = Result<()>;
    const MAX_JOBS: usize = 256;
    const MAX_BYTES: usize = usize::MAX;

    fn bytes(_: &Self::Job) -> usize {
        0
    }

    async fn write(store: &Store, jobs: Vec<Self::Job>) -> Vec<Self::Answer> {
        store.record_attempts(&jobs).await
    }
}
