//! POSIX shared memory, common to Linux and macOS: the object checks, the mapping (through
//! memmap2) and removing a stale name. How an object is created, opened and locked is the
//! backend's (`linux.rs`: files in /dev/shm; `macos.rs`: `shm_open`).

use std::fs::File;
use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{FileType, Stat};

use super::{Expect, Liveness, Member, OpenError, Perm, Token};

/// A mapped POSIX shared-memory object.
#[derive(Debug)]
pub(crate) struct Shm {
    /// `None` while the object has size 0 (its creator has not sized it yet).
    map: Option<MmapRaw>,
    /// Holds the open file, kept for `fstat`, the liveness token, the cleanup lock and the
    /// participants' tags (the locks belong to this open file description and go with its
    /// last reference, the mapping included). `None` once detached.
    presence: Option<Arc<Presence>>,
    /// The object's device and inode, kept by `detach` to recognise the object by name.
    detached: Option<(u64, u64)>,
}

/// This process's proof of life in one object (see the contract in `sys/mod.rs`).
#[derive(Debug)]
pub(crate) struct Presence {
    pub(super) file: File,
    /// Linux: the tag this open file description holds the byte of, claimed on first use.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(super) tag: OnceLock<u32>,
}

impl Presence {
    fn new(file: File) -> Arc<Presence> {
        Arc::new(Presence {
            file,
            tag: OnceLock::new(),
        })
    }

    /// The record others keep of this process as a participant in the object.
    pub(crate) fn me(&self) -> io::Result<Member> {
        super::os::member(self)
    }

    /// Whether the participant recorded as `m` is alive.
    pub(crate) fn alive(&self, m: Member) -> Liveness {
        super::os::alive(self, m)
    }
}

impl Shm {
    /// Creates `os_name` exclusively with permission bits `mode` (and the group `group`, if
    /// given), sized `size` and reserved, holding its liveness token.
    #[doc(alias = "shm_open")]
    pub(crate) fn create(
        os_name: &str,
        size: usize,
        mode: u32,
        group: Option<u32>,
    ) -> io::Result<Shm> {
        let (file, map) = super::os::create_object(os_name, size, mode, group)?;
        Ok(Shm::new(Some(map), file))
    }

    fn new(map: Option<MmapRaw>, file: File) -> Shm {
        Shm {
            map,
            presence: Some(Presence::new(file)),
            detached: None,
        }
    }

    /// Closes the file, keeping the mapping (which keeps the object's memory). What needs
    /// the file then answers "cannot tell" (`token`, `perm`), and `unlink_stale` reopens the
    /// name to recognise the object by its device and inode.
    pub(crate) fn detach(&mut self) {
        let Some(p) = self.presence.take() else {
            return;
        };
        self.detached = rustix::fs::fstat(&p.file).ok().map(|st| file_id(&st));
    }

    fn file(&self) -> Option<&File> {
        self.presence.as_deref().map(|p| &p.file)
    }

    /// Opens and maps an existing object at its current size (macOS: rounded up to pages),
    /// after checking that `expect` allows it.
    pub(crate) fn open(os_name: &str, expect: &Expect) -> Result<Shm, OpenError> {
        let file = super::os::open_object(os_name)?;
        let st = rustix::fs::fstat(&file).map_err(io::Error::from)?;
        check_object(&st, expect)?;
        let size = usize::try_from(st.st_size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "object size out of range"))?;
        if size == 0 {
            return Ok(Shm::new(None, file));
        }
        let map = map(&file, size)?;
        Ok(Shm::new(Some(map), file))
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.map
            .as_ref()
            .map_or(std::ptr::NonNull::dangling().as_ptr(), MmapRaw::as_mut_ptr)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.as_ref().map_or(0, MmapRaw::len)
    }

    /// This process's proof of life in the object, shared by everything made from this
    /// `Shm`; `None` once detached.
    pub(crate) fn presence(&self) -> Option<&Arc<Presence>> {
        self.presence.as_ref()
    }

    /// The uid that owns the object.
    pub(crate) fn owner_uid(&self) -> Option<u32> {
        rustix::fs::fstat(self.file()?).ok().map(|st| st.st_uid)
    }

    /// The object's permission bits and group.
    pub(crate) fn perm(&self) -> Option<Perm> {
        rustix::fs::fstat(self.file()?).ok().map(|st| Perm {
            #[allow(clippy::unnecessary_cast)] // mode_t is u16 on macOS
            mode: st.st_mode as u32 & 0o7777,
            gid: st.st_gid,
        })
    }

    /// Whether another open of the object holds its liveness token.
    pub(crate) fn token(&self) -> Token {
        self.file().map_or(Token::Unknown, super::os::probe_token)
    }

    /// Takes the liveness token if nobody holds it; returns whether this `Shm` holds it now.
    pub(crate) fn take_token(&self) -> bool {
        self.file().is_some_and(super::os::take_token)
    }

    /// Removes `os_name` if it still names the same object as `stale` (which the caller found
    /// dead, or owns). Holding the cleanup lock on the stale object while re-checking the name
    /// means two processes cleaning up the same stale object at once cannot remove the fresh
    /// object one of them created meanwhile. The lock is tried without blocking for at most
    /// `wait` (`WouldBlock` after that: another process keeps it); the name is re-checked with
    /// a stat that neither follows a link nor opens what is there. Returns whether it removed
    /// the name.
    pub(crate) fn unlink_stale(os_name: &str, stale: &Shm, wait: Duration) -> io::Result<bool> {
        let reopened;
        let (file, id) = match (stale.file(), stale.detached) {
            (Some(file), _) => (file, file_id(&rustix::fs::fstat(file)?)),
            (None, Some(id)) => {
                reopened = match super::os::open_object(os_name) {
                    Ok(file) => file,
                    Err(super::OpenError::Os(e)) if e.kind() == io::ErrorKind::NotFound => {
                        return Ok(false)
                    }
                    Err(super::OpenError::Os(e)) => return Err(e),
                    Err(super::OpenError::Squatted { .. }) => return Ok(false),
                };
                (&reopened, id)
            }
            (None, None) => return Ok(false),
        };
        super::os::cleanup_lock(file, wait)?;
        let Some(current) = super::os::stat_name(os_name)? else {
            return Ok(false);
        };
        if file_id(&current) != id {
            return Ok(false);
        }
        match rustix::shm::unlink(os_name) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// An object's device and inode.
#[allow(clippy::unnecessary_cast)] // dev_t is i32 on macOS
fn file_id(st: &Stat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

/// Maps `size` bytes of `file` read-write.
pub(super) fn map(file: &File, size: usize) -> io::Result<MmapRaw> {
    MmapOptions::new().len(size).map_raw(file)
}

/// The checks every opened object passes: a regular file (where the OS reports file types
/// for shm objects: Linux), owned by the expected uid, not writable by group or others unless
/// the caller allows it; or, of another owner, one that `expect.shared` admits.
fn check_object(st: &Stat, expect: &Expect) -> Result<(), OpenError> {
    let owner_uid = st.st_uid;
    let squatted = |reason: String| Err(OpenError::Squatted { reason, owner_uid });
    // macOS reports a shm object's permission bits without a file type, and its shm
    // namespace holds nothing else, so only Linux checks the type.
    if cfg!(target_os = "linux") {
        let kind = FileType::from_raw_mode(st.st_mode as _);
        if kind != FileType::RegularFile {
            return squatted(format!("it is {}, not a regular file", describe(kind)));
        }
    }
    let want = expect
        .owner
        .unwrap_or_else(|| rustix::process::geteuid().as_raw());
    #[allow(clippy::unnecessary_cast)] // mode_t is u16 on macOS
    let mode = st.st_mode as u32 & 0o7777;
    if owner_uid != want {
        let Some(shared) = expect.shared else {
            return squatted(format!(
                "it is owned by uid {owner_uid}, not by uid {want} as expected"
            ));
        };
        return match shared.admits(mode, st.st_gid) {
            None => Ok(()),
            Some(why) => squatted(format!(
                "it is owned by uid {owner_uid}, not uid {want}, and {why}"
            )),
        };
    }
    if mode & 0o022 != 0 && !expect.shared_write {
        return squatted(format!(
            "it is writable by group or others (mode {mode:o}), which was not asked for"
        ));
    }
    Ok(())
}

/// "a FIFO", "a directory", ... for messages.
pub(super) fn describe(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        _ => "an object of unknown type",
    }
}
