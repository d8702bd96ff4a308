//! Parallel gzip whose bytes depend only on the input: the input is cut into fixed-size blocks,
//! each block is deflated on its own by a fresh compressor (sync-flushed, so blocks join into one
//! valid deflate stream, as `pigz --independent` does), and the blocks are written in order.
//! Neither the number of threads nor their timing can change the output, which is what layer
//! digests need. (gzp, tried first, gave different bytes from run to run on large inputs, as its
//! workers reuse compressors across blocks.)

use flate2::{Compress, Compression, FlushCompress, Status};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Uncompressed bytes per block. Part of the output format: changing it changes digests.
pub const BLOCK_SIZE: usize = 512 * 1024;

/// gzip header: deflate, no name, no time, no extra flags, OS "unknown" (fixed on every machine).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

struct Job {
    seq: u64,
    data: Vec<u8>,
    last: bool,
}

type Done = (u64, io::Result<Vec<u8>>);

struct Pool {
    jobs: SyncSender<Job>,
    done: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn start(level: u32, threads: usize) -> Pool {
        let (jobs, job_rx) = sync_channel::<Job>(threads);
        let (done_tx, done) = sync_channel::<Done>(threads * 2);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let workers = (0..threads)
            .map(|_| {
                let (job_rx, done_tx) = (job_rx.clone(), done_tx.clone());
                std::thread::spawn(move || loop {
                    let job = match job_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let result = deflate_block(&job.data, job.last, level);
                    if done_tx.send((job.seq, result)).is_err() {
                        return;
                    }
                })
            })
            .collect();
        Pool { jobs, done, workers }
    }
}

pub struct ParallelGzip<W: Write> {
    out: W,
    block: Vec<u8>,
    crc: crc32fast::Hasher,
    length: u64,
    level: u32,
    threads: usize,
    /// The workers, started with the first full block: a layer of one block (most function
    /// layers) is deflated on the calling thread, sparing the thread start-up.
    pool: Option<Pool>,
    submitted: u64,
    written: u64,
    pending: BTreeMap<u64, Vec<u8>>,
    max_in_flight: u64,
}

impl<W: Write> ParallelGzip<W> {
    pub fn new(mut out: W, level: u32, threads: usize) -> io::Result<Self> {
        out.write_all(&HEADER)?;
        let threads = threads.max(1);
        Ok(ParallelGzip {
            out,
            block: Vec::with_capacity(BLOCK_SIZE),
            crc: crc32fast::Hasher::new(),
            length: 0,
            level,
            threads,
            pool: None,
            submitted: 0,
            written: 0,
            pending: BTreeMap::new(),
            max_in_flight: threads as u64 * 2,
        })
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        while self.submitted - self.written >= self.max_in_flight {
            self.collect_one()?;
        }
        let data = std::mem::replace(
            &mut self.block,
            if last {
                Vec::new()
            } else {
                Vec::with_capacity(BLOCK_SIZE)
            },
        );
        if last && self.pool.is_none() {
            // All of the input in one block: no thread is worth starting.
            self.out.write_all(&deflate_block(&data, true, self.level)?)?;
            self.submitted += 1;
            self.written += 1;
            return Ok(());
        }
        let job = Job {
            seq: self.submitted,
            data,
            last,
        };
        let (level, threads) = (self.level, self.threads);
        self.pool
            .get_or_insert_with(|| Pool::start(level, threads))
            .jobs
            .send(job)
            .map_err(|_| io::Error::other("compression thread stopped"))?;
        self.submitted += 1;
        Ok(())
    }

    /// Waits for one compressed block and writes every block that is now next in order.
    fn collect_one(&mut self) -> io::Result<()> {
        let (seq, result) = self
            .pool
            .as_ref()
            .expect("blocks in flight have a pool")
            .done
            .recv()
            .map_err(|_| io::Error::other("compression thread stopped"))?;
        self.pending.insert(seq, result?);
        while let Some(bytes) = self.pending.remove(&self.written) {
            self.out.write_all(&bytes)?;
            self.written += 1;
        }
        Ok(())
    }

    /// Compresses what is left, writes the gzip trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while self.written < self.submitted {
            self.collect_one()?;
        }
        let crc = std::mem::replace(&mut self.crc, crc32fast::Hasher::new()).finalize();
        let length = self.length;
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(&(length as u32).to_le_bytes())?;
        self.out.flush()?;
        if let Some(Pool { jobs, workers, .. }) = self.pool.take() {
            drop(jobs);
            for worker in workers {
                let _ = worker.join();
            }
        }
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let take = buf.len().min(BLOCK_SIZE - self.block.len());
        self.block.extend_from_slice(&buf[..take]);
        self.crc.update(&buf[..take]);
        self.length += take as u64;
        if self.block.len() == BLOCK_SIZE {
            self.submit(false)?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Raw deflate of one block with a fresh compressor: sync-flushed (ends on a byte boundary, not
/// final) unless it is the last block, which ends the stream.
fn deflate_block(data: &[u8], last: bool, level: u32) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(level), false);
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 64);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == data.len();
        let finished = if last {
            status == Status::StreamEnd
        } else {
            all_in && out.len() < out.capacity()
        };
        if finished {
            return Ok(out);
        }
        out.reserve(out.capacity().max(64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        let mut x: u32 = 7;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                if (i / 1000) % 3 == 0 {
                    (x >> 16) as u8
                } else {
                    b"function main() { return 42; }\n"[i % 31]
                }
            })
            .collect()
    }

    fn gzip(data: &[u8], level: u32, threads: usize, chunk: usize) -> Vec<u8> {
        let mut gz = ParallelGzip::new(Vec::new(), level, threads).unwrap();
        for piece in data.chunks(chunk) {
            gz.write_all(piece).unwrap();
        }
        gz.finish().unwrap()
    }

    #[test]
    fn output_does_not_depend_on_threads_or_write_sizes_and_round_trips() {
        // Level 6 for function layers, 1 for dependency layers.
        for level in [6, 1] {
            for len in [0, 1, BLOCK_SIZE, BLOCK_SIZE + 1, 5 * BLOCK_SIZE + 12_345] {
                let data = sample(len);
                let one = gzip(&data, level, 1, 8192);
                assert_eq!(one, gzip(&data, level, 2, 4096), "level {level}, len {len}");
                assert_eq!(one, gzip(&data, level, 4, 100_000), "level {level}, len {len}");
                let mut back = Vec::new();
                flate2::read::GzDecoder::new(&one[..]).read_to_end(&mut back).unwrap();
                assert_eq!(back, data, "level {level}, len {len}");
            }
        }
    }
}
