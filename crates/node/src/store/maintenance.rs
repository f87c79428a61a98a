//! Maintenance: collecting tombstones every site has acknowledged, and trimming the change log to its
//! retention. Both scan on the caller's task and hand the writer only what to remove, which it checks
//! again against the group it commits (a key written in between is not collected).

use geostore_model::decode_entry;
use tokio::sync::oneshot;

use super::writer::Request;
use super::{ChangeError, Store, StoreError};

impl Store {
    /// Collects the dead keys (deleted, or expired at `now`) whose last change is logged in `partition`'s
    /// log after `after` and up to `through`, which every site has acknowledged. A key is removed only if
    /// its stored state is still exactly the one logged (so the record is its last change) and reads as
    /// absent. Returns the keys removed and the sequence scanned up to.
    pub async fn collect_garbage(&self, partition: u16, after: u64, through: u64) -> Result<(usize, u64), ChangeError> {
        const SCAN_RECORDS_MAX: usize = 4096;
        let now_ms = self.clock.wall().now_unix_ms();
        let mut candidates = Vec::new();
        let mut scanned = after;
        while scanned < through {
            let records = self.read_log(partition, scanned, SCAN_RECORDS_MAX, usize::MAX)?;
            let Some(&(last, _)) = records.last() else { break };
            for (sequence, record) in records {
                if sequence > through {
                    break;
                }
                scanned = sequence;
                let logged = decode_entry(&record.entry)
                    .map_err(|e| StoreError::corrupt("entry in the log record of key", &record.key, e))?;
                if logged.read(now_ms).is_none() && self.entry(&record.key)?.as_ref() == Some(&logged) {
                    candidates.push((record.key, logged));
                }
            }
            if last >= through {
                break;
            }
        }
        if candidates.is_empty() {
            return Ok((0, scanned));
        }
        let (reply, answer) = oneshot::channel();
        self.submit(Request::Collect { partition, candidates, reply }).await?;
        let collected = answer.await.map_err(|_| StoreError::WriterStopped)??;
        Ok((collected, scanned))
    }

    /// Trims `partition`'s log to the retention limits (records, bytes, age). Returns the records removed.
    /// Reads only the records it removes (and one page more).
    pub async fn trim_log(&self, partition: u16) -> Result<u64, ChangeError> {
        let index = usize::from(partition);
        let (head, log_start, log_bytes) = {
            let state = self.progress.lock();
            (state.heads[index], state.log_starts[index], state.log_bytes[index])
        };
        let bytes_max = self.config.log_retention_bytes / u64::from(self.identity.partitions);
        let now_ms = self.clock.wall().now_unix_ms();
        let mut start = log_start;
        let mut bytes = log_bytes;
        'pages: loop {
            let page = self.read_log(partition, start - 1, 256, usize::MAX)?;
            if page.is_empty() {
                break;
            }
            for (sequence, record) in page {
                let records_kept = head - sequence + 1;
                let too_many = records_kept > self.config.log_retention_ops;
                let too_big = bytes > bytes_max;
                let too_old = now_ms.saturating_sub(record.hlc.unix_ms()) as u64 > self.config.log_retention_ms;
                if !(too_many || too_big || too_old) {
                    break 'pages;
                }
                bytes = bytes.saturating_sub(record.encoded_len() as u64);
                start = sequence + 1;
            }
        }
        if start <= log_start {
            return Ok(0);
        }
        let (reply, answer) = oneshot::channel();
        self.submit(Request::Trim { partition, start, bytes_removed: log_bytes - bytes, reply }).await?;
        answer.await.map_err(|_| StoreError::WriterStopped)??;
        Ok(start - log_start)
    }
}
