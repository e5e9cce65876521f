//! POSIX shared memory, common to Linux and macOS: `shm_open` + `mmap` (through memmap2).

use std::fs::File;
use std::io;

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::Mode;
use rustix::shm;

/// A mapped POSIX shared-memory object.
#[derive(Debug)]
pub(crate) struct Shm {
    /// `None` while the object has size 0 (its creator has not sized it yet).
    map: Option<MmapRaw>,
    // Kept open for `fstat` checks; the mapping does not need it.
    _file: File,
}

impl Shm {
    /// Creates `os_name` exclusively with permission bits `mode`, sized `size` and reserved.
    #[doc(alias = "shm_open")]
    pub(crate) fn create(os_name: &str, size: usize, mode: u32) -> io::Result<Shm> {
        let fd = shm::open(
            os_name,
            shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR,
            Mode::from_raw_mode(mode as _),
        )?;
        let file = File::from(fd);
        let init = (|| {
            // Linux's shm_open applies the umask; set exactly what the caller asked for.
            // (macOS applies no umask to shm objects, and refuses fchmod on them.)
            #[cfg(not(target_os = "macos"))]
            rustix::fs::fchmod(&file, Mode::from_raw_mode(mode as _))?;
            rustix::fs::ftruncate(&file, size as u64)?;
            super::os::reserve(&file, size)?;
            MmapOptions::new().len(size).map_raw(&file)
        })();
        match init {
            Ok(map) => Ok(Shm {
                map: Some(map),
                _file: file,
            }),
            Err(e) => {
                let _ = shm::unlink(os_name);
                Err(e)
            }
        }
    }

    /// Opens and maps an existing object at its current size (macOS: rounded up to pages).
    pub(crate) fn open(os_name: &str) -> io::Result<Shm> {
        let fd = shm::open(os_name, shm::OFlags::RDWR, Mode::empty())?;
        let file = File::from(fd);
        let size = rustix::fs::fstat(&file)?.st_size;
        let size = usize::try_from(size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "object size out of range"))?;
        if size == 0 {
            return Ok(Shm {
                map: None,
                _file: file,
            });
        }
        let map = MmapOptions::new().len(size).map_raw(&file)?;
        Ok(Shm {
            map: Some(map),
            _file: file,
        })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.map
            .as_ref()
            .map_or(std::ptr::NonNull::dangling().as_ptr(), MmapRaw::as_mut_ptr)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.as_ref().map_or(0, MmapRaw::len)
    }
}

impl Shm {
    /// Removes `os_name` if it still names the same object as `stale` (which the caller found
    /// dead). Holding an exclusive `flock` on the stale object while re-checking the name
    /// means two processes cleaning up the same stale object at once cannot remove the fresh
    /// object one of them created meanwhile. Returns whether it removed it.
    pub(crate) fn unlink_stale(os_name: &str, stale: &Shm) -> io::Result<bool> {
        use rustix::fs::{flock, FlockOperation};
        // Where flock is unsupported (it is on Linux tmpfs), fall back to the identity check.
        let _ = flock(&stale._file, FlockOperation::LockExclusive);
        let current = match shm::open(os_name, shm::OFlags::RDONLY, Mode::empty()) {
            Ok(fd) => rustix::fs::fstat(&fd)?,
            Err(rustix::io::Errno::NOENT) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let held = rustix::fs::fstat(&stale._file)?;
        if (current.st_dev, current.st_ino) != (held.st_dev, held.st_ino) {
            return Ok(false);
        }
        match shm::unlink(os_name) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
