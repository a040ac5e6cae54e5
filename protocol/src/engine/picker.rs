//! Which blocks to request next, and the life of a piece from first request to verified.
//!
//! A peer works on pieces of its own ("owner") so that a bad piece can be blamed on one peer and
//! so that pieces complete instead of being spread thin; it joins pieces others started only when
//! it has nothing else to do. New pieces are chosen at random for the first few (to have something
//! to trade quickly), then rarest first. When every missing block is already requested, endgame
//! lets a second peer request the same block.

use super::bitfield::Bitfield;
use super::ConnId;
use crate::storage::{Storage, StorageError};
use crate::wire::{BlockRequest, BLOCK_SIZE};
use sha1::{Digest, Sha1};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Pieces picked at random before rarest first takes over.
const RANDOM_FIRST: u32 = 4;
/// In endgame a block is requested from at most this many peers at once.
const ENDGAME_DUPLICATES: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Free,
    Requested(u8),
    Done,
}

struct Partial {
    blocks: Vec<Block>,
    done: u32,
    free: u32,
    owner: Option<ConnId>,
    /// After a hash failure with several contributors, the retry comes from one peer only, so
    /// that a second failure has exactly one culprit.
    exclusive: bool,
    hasher: Sha1,
    /// Bytes from the start of the piece already fed to `hasher`.
    hashed: u32,
    contributors: Vec<SocketAddr>,
    /// Every block is in and the driver is hashing the piece under this job number.
    hash_job: Option<u64>,
}

pub enum BlockOutcome {
    /// The block was not expected (already had, wrong size): nothing stored.
    Ignored,
    Stored {
        /// Other peers that were also asked for this block (endgame): cancel theirs.
        duplicates: bool,
        piece: Option<PieceOutcome>,
    },
}

pub enum PieceOutcome {
    Verified,
    Failed {
        contributors: Vec<SocketAddr>,
    },
    /// Every block is stored; the driver hashes the piece and answers with this job number.
    NeedsHash {
        job: u64,
    },
}

pub struct Picker {
    piece_length: u32,
    total: u64,
    hashes: Vec<[u8; 20]>,
    have: Vec<bool>,
    have_count: u32,
    availability: Vec<u32>,
    partial: BTreeMap<u32, Partial>,
    /// Pieces whose next download must come from one peer.
    retry_exclusive: Vec<bool>,
    rng: fastrand::Rng,
    scratch: Vec<u8>,
    /// The driver hashes whole pieces (see `Config::driver_hashes`); we hash nothing as blocks
    /// arrive.
    driver_hashes: bool,
    next_job: u64,
}

impl Picker {
    pub fn new(
        piece_length: u32,
        total: u64,
        hashes: Vec<[u8; 20]>,
        seed: u64,
        driver_hashes: bool,
    ) -> Self {
        let n = hashes.len();
        Picker {
            piece_length,
            total,
            hashes,
            have: vec![false; n],
            have_count: 0,
            availability: vec![0; n],
            partial: BTreeMap::new(),
            retry_exclusive: vec![false; n],
            rng: fastrand::Rng::with_seed(seed),
            scratch: Vec::new(),
            driver_hashes,
            next_job: 1,
        }
    }

    pub fn num_pieces(&self) -> u32 {
        self.hashes.len() as u32
    }

    pub fn have(&self) -> &[bool] {
        &self.have
    }

    pub fn has(&self, piece: u32) -> bool {
        self.have.get(piece as usize).copied().unwrap_or(false)
    }

    pub fn have_count(&self) -> u32 {
        self.have_count
    }

    pub fn is_complete(&self) -> bool {
        self.have_count == self.num_pieces()
    }

    pub fn piece_size(&self, piece: u32) -> u32 {
        let start = piece as u64 * self.piece_length as u64;
        (self.total - start).min(self.piece_length as u64) as u32
    }

    pub fn piece_offset(&self, piece: u32) -> u64 {
        piece as u64 * self.piece_length as u64
    }

    /// Bytes in verified pieces.
    pub fn verified_bytes(&self) -> u64 {
        let mut bytes = self.have_count as u64 * self.piece_length as u64;
        let last = self.num_pieces().saturating_sub(1);
        if self.has(last) {
            bytes = bytes - self.piece_length as u64 + self.piece_size(last) as u64;
        }
        bytes
    }

    pub fn peer_has(&mut self, piece: u32) {
        if let Some(a) = self.availability.get_mut(piece as usize) {
            *a += 1;
        }
    }

    pub fn peer_has_all(&mut self, bits: &Bitfield) {
        for i in bits.iter_set() {
            self.peer_has(i);
        }
    }

    pub fn peer_gone(&mut self, bits: &Bitfield) {
        for i in bits.iter_set() {
            if let Some(a) = self.availability.get_mut(i as usize) {
                *a = a.saturating_sub(1);
            }
        }
    }

    /// The peer left: pieces it owned may be finished by others.
    pub fn release_owner(&mut self, conn: ConnId) {
        for p in self.partial.values_mut() {
            if p.owner == Some(conn) {
                p.owner = None;
            }
        }
    }

    /// A request we sent will not be answered (choke, reject, timeout, disconnect).
    pub fn request_dropped(&mut self, req: BlockRequest) {
        if let Some(p) = self.partial.get_mut(&req.index) {
            let b = (req.begin / BLOCK_SIZE) as usize;
            if let Some(Block::Requested(n)) = p.blocks.get(b).copied() {
                p.blocks[b] = if n <= 1 {
                    Block::Free
                } else {
                    Block::Requested(n - 1)
                };
                if n <= 1 {
                    p.free += 1;
                }
            }
        }
    }

    /// Up to `want` new requests for a peer that has `bits`. `mine` tells whether the peer
    /// already has a request outstanding (so endgame never asks one peer twice for a block).
    pub fn pick(
        &mut self,
        conn: ConnId,
        bits: &Bitfield,
        want: usize,
        mine: &dyn Fn(&BlockRequest) -> bool,
        out: &mut Vec<BlockRequest>,
    ) {
        if want == 0 {
            return;
        }
        let start = out.len();
        let full = |out: &Vec<BlockRequest>| out.len() - start >= want;
        // 1. Pieces this peer owns.
        let owned: Vec<u32> = self
            .partial
            .iter()
            .filter(|(_, p)| p.owner == Some(conn) && p.free > 0)
            .map(|(&i, _)| i)
            .collect();
        for i in owned {
            self.take_free(i, want - (out.len() - start), out);
            if full(out) {
                return;
            }
        }
        // 2. New pieces of its own.
        while !full(out) {
            let Some(i) = self.select_new(bits) else {
                break;
            };
            let exclusive = self.retry_exclusive[i as usize];
            self.start_piece(i, conn, exclusive);
            self.take_free(i, want - (out.len() - start), out);
        }
        if full(out) {
            return;
        }
        // 3. Help with pieces others started (not exclusive ones held by a live owner).
        let joinable: Vec<u32> = self
            .partial
            .iter()
            .filter(|(&i, p)| p.free > 0 && bits.get(i) && (p.owner.is_none() || !p.exclusive))
            .map(|(&i, _)| i)
            .collect();
        for i in joinable {
            if let Some(p) = self.partial.get_mut(&i) {
                if p.owner.is_none() {
                    p.owner = Some(conn);
                }
            }
            self.take_free(i, want - (out.len() - start), out);
            if full(out) {
                return;
            }
        }
        // 4. Endgame: every missing piece is in progress and nothing is free.
        let missing = self.num_pieces() - self.have_count;
        if self.partial.len() as u32 == missing && self.partial.values().all(|p| p.free == 0) {
            for (&i, p) in self.partial.iter_mut() {
                if !bits.get(i) || (p.exclusive && p.owner.is_some() && p.owner != Some(conn)) {
                    continue;
                }
                let size = piece_size(self.piece_length, self.total, i);
                for (b, state) in p.blocks.iter_mut().enumerate() {
                    if let Block::Requested(n) = *state {
                        let req = block_request(i, b as u32, size);
                        // Blocks picked earlier in this call are not in `mine` yet.
                        if n < ENDGAME_DUPLICATES && !mine(&req) && !out[start..].contains(&req) {
                            *state = Block::Requested(n + 1);
                            out.push(req);
                            if full(out) {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }

    fn take_free(&mut self, piece: u32, want: usize, out: &mut Vec<BlockRequest>) {
        let size = self.piece_size(piece);
        let Some(p) = self.partial.get_mut(&piece) else {
            return;
        };
        let mut taken = 0;
        for (b, state) in p.blocks.iter_mut().enumerate() {
            if taken == want {
                break;
            }
            if *state == Block::Free {
                *state = Block::Requested(1);
                p.free -= 1;
                out.push(block_request(piece, b as u32, size));
                taken += 1;
            }
        }
    }

    fn start_piece(&mut self, piece: u32, owner: ConnId, exclusive: bool) {
        let blocks = self.piece_size(piece).div_ceil(BLOCK_SIZE) as usize;
        self.partial.insert(
            piece,
            Partial {
                blocks: vec![Block::Free; blocks],
                done: 0,
                free: blocks as u32,
                owner: Some(owner),
                exclusive,
                hasher: Sha1::new(),
                hashed: 0,
                contributors: Vec::new(),
                hash_job: None,
            },
        );
    }

    /// A piece the peer has that we neither have nor have started: random for the first few
    /// pieces, rarest first after that (ties broken by a random starting point).
    fn select_new(&mut self, bits: &Bitfield) -> Option<u32> {
        let n = self.num_pieces();
        if n == 0 {
            return None;
        }
        let offset = self.rng.u32(0..n);
        let candidate =
            |i: u32| !self.have[i as usize] && bits.get(i) && !self.partial.contains_key(&i);
        if self.have_count < RANDOM_FIRST {
            return (0..n).map(|k| (k + offset) % n).find(|&i| candidate(i));
        }
        let mut best: Option<(u32, u32)> = None;
        for k in 0..n {
            let i = (k + offset) % n;
            if candidate(i) {
                let a = self.availability[i as usize];
                if best.is_none_or(|(_, b)| a < b) {
                    best = Some((i, a));
                    if a <= 1 {
                        break;
                    }
                }
            }
        }
        best.map(|(i, _)| i)
    }

    /// Stores a received block and advances the piece's hash; verifies the piece when its last
    /// block is in, or asks for the driver's hash of it.
    pub fn block_received(
        &mut self,
        index: u32,
        begin: u32,
        data: &[u8],
        from: SocketAddr,
        storage: &mut dyn Storage,
    ) -> Result<BlockOutcome, StorageError> {
        let size = self.piece_size_checked(index);
        let Some(size) = size else {
            return Ok(BlockOutcome::Ignored);
        };
        let Some(p) = self.partial.get_mut(&index) else {
            return Ok(BlockOutcome::Ignored);
        };
        if !begin.is_multiple_of(BLOCK_SIZE) || begin >= size {
            return Ok(BlockOutcome::Ignored);
        }
        let b = (begin / BLOCK_SIZE) as usize;
        let expected = (size - begin).min(BLOCK_SIZE) as usize;
        if data.len() != expected || p.blocks[b] == Block::Done {
            return Ok(BlockOutcome::Ignored);
        }
        let duplicates = matches!(p.blocks[b], Block::Requested(n) if n > 1);
        if p.blocks[b] == Block::Free {
            p.free -= 1;
        }
        let offset = index as u64 * self.piece_length as u64 + begin as u64;
        storage.write(offset, data)?;
        p.blocks[b] = Block::Done;
        p.done += 1;
        if !p.contributors.contains(&from) {
            p.contributors.push(from);
        }
        if !self.driver_hashes {
            // Hash in arrival order when the block is next; otherwise it is read back later.
            if p.hashed == begin {
                p.hasher.update(data);
                p.hashed += data.len() as u32;
            }
            let piece_start = index as u64 * self.piece_length as u64;
            while p.hashed < size && p.blocks[(p.hashed / BLOCK_SIZE) as usize] == Block::Done {
                let len = (size - p.hashed).min(BLOCK_SIZE) as usize;
                self.scratch.resize(len, 0);
                storage.read(piece_start + p.hashed as u64, &mut self.scratch)?;
                p.hasher.update(&self.scratch);
                p.hashed += len as u32;
            }
        }
        if p.done as usize != p.blocks.len() {
            return Ok(BlockOutcome::Stored {
                duplicates,
                piece: None,
            });
        }
        let outcome = if self.driver_hashes {
            // The piece stays partial, with no block free, until the driver's answer.
            let job = self.next_job;
            self.next_job += 1;
            p.hash_job = Some(job);
            PieceOutcome::NeedsHash { job }
        } else {
            let p = self.partial.remove(&index).expect("partial piece present");
            let digest: [u8; 20] = p.hasher.finalize().into();
            self.finish(index, digest, p.contributors)
        };
        Ok(BlockOutcome::Stored {
            duplicates,
            piece: Some(outcome),
        })
    }

    /// The driver's digest for hash job `job` of piece `index`. `None` if that job is no longer
    /// awaited (the piece was given up, e.g. by a pause, and perhaps started again since).
    pub fn piece_hashed(&mut self, index: u32, job: u64, digest: [u8; 20]) -> Option<PieceOutcome> {
        if self.partial.get(&index)?.hash_job != Some(job) {
            return None;
        }
        let p = self.partial.remove(&index)?;
        Some(self.finish(index, digest, p.contributors))
    }

    fn finish(
        &mut self,
        index: u32,
        digest: [u8; 20],
        contributors: Vec<SocketAddr>,
    ) -> PieceOutcome {
        if digest == self.hashes[index as usize] {
            self.mark_have(index);
            PieceOutcome::Verified
        } else {
            self.retry_exclusive[index as usize] = contributors.len() > 1;
            PieceOutcome::Failed { contributors }
        }
    }

    fn piece_size_checked(&self, index: u32) -> Option<u32> {
        (index < self.num_pieces()).then(|| self.piece_size(index))
    }

    /// Marks a piece had without hashing it (the driver vouches for it, e.g. a fresh seed).
    pub fn mark_have(&mut self, index: u32) {
        if !self.have[index as usize] {
            self.have[index as usize] = true;
            self.have_count += 1;
            self.retry_exclusive[index as usize] = false;
        }
    }

    /// Resume: hashes piece `index` as it stands in storage and marks it had if it matches.
    pub fn check_piece(
        &mut self,
        index: u32,
        storage: &mut dyn Storage,
    ) -> Result<bool, StorageError> {
        let size = self.piece_size(index) as usize;
        let start = self.piece_offset(index);
        let mut hasher = Sha1::new();
        // 64 KiB calls: V8 only swaps in optimised wasm between calls (FACTS.md).
        const CHUNK: usize = 64 * 1024;
        self.scratch.resize(CHUNK, 0);
        let mut done = 0;
        while done < size {
            let len = (size - done).min(CHUNK);
            storage.read(start + done as u64, &mut self.scratch[..len])?;
            hasher.update(&self.scratch[..len]);
            done += len;
        }
        let ok = <[u8; 20]>::from(hasher.finalize()) == self.hashes[index as usize];
        if ok {
            self.mark_have(index);
        }
        Ok(ok)
    }

    /// Every in-progress piece is given up (pause): requests are gone with the connections.
    pub fn clear_partials(&mut self) {
        self.partial.clear();
    }
}

fn piece_size(piece_length: u32, total: u64, piece: u32) -> u32 {
    let start = piece as u64 * piece_length as u64;
    (total - start).min(piece_length as u64) as u32
}

fn block_request(piece: u32, block: u32, piece_size: u32) -> BlockRequest {
    let begin = block * BLOCK_SIZE;
    BlockRequest {
        index: piece,
        begin,
        length: (piece_size - begin).min(BLOCK_SIZE),
    }
}
