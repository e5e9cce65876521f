//! Whose objects an opener accepts (the multi-user opt-in).

use crate::sys;
#[cfg(doc)]
use crate::Error;

/// Whose objects an opener accepts.
///
/// By default ([`Access::owner_only`]) a process opens only objects that its own user
/// created and that no one else may write: another user's object under the name is
/// [`Error::Squatted`]. A service that serves other users creates its objects with a wider
/// mode (e.g. [`ServerBuilder::mode`](crate::ServerBuilder::mode)`(0o660)` with a shared
/// group, or [`Reader::create_with_mode`](crate::Reader::create_with_mode) for a pool), and
/// its clients accept them with [`Access::shared_by`] the server's uid.
///
/// # Examples
/// ```no_run
/// use shmlink::{Access, Client};
/// // A client of a service run by uid 990 (e.g. a system daemon), created with mode 0o660.
/// let mut client = Client::connect_with("metrics", Access::shared_by(990))?;
/// # Ok::<(), shmlink::CallError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Access {
    pub(super) expect: sys::Expect,
}

impl Access {
    /// Only objects of this process's own user, writable by no one else (the default).
    pub const fn owner_only() -> Access {
        Access {
            expect: sys::Expect {
                owner: None,
                shared_write: false,
                shared: None,
            },
        }
    }

    /// Objects created by user `uid`, which may be writable by group and others (a service
    /// shared between users). Pass this process's own uid to open its own service that was
    /// created with a wider mode.
    pub const fn shared_by(uid: u32) -> Access {
        Access {
            expect: sys::Expect {
                owner: Some(uid),
                shared: None,
                shared_write: true,
            },
        }
    }

    /// Objects of this process's own user, writable by others only if `shared_write` (a
    /// creator looking at what stands under its name: its mode asked for that or not).
    pub(crate) const fn own(shared_write: bool) -> Access {
        Access {
            expect: sys::Expect {
                owner: None,
                shared_write,
                shared: None,
            },
        }
    }

    /// The objects of a service whose main object has permission `perm`: if that lets
    /// others write ([`Perm::is_shared`](sys::Perm::is_shared)), this user's objects, and
    /// other users' objects whose bits are within `perm` and whose group is `perm`'s where
    /// only the group may write ([`Perm::admits`](sys::Perm::admits)); otherwise only this
    /// user's objects that no one else may write. (A pool's buffers: its participants of
    /// every uid create them.) `None` (no permission bits: Windows) is the default.
    pub(crate) fn shared_service(perm: Option<sys::Perm>) -> Access {
        match perm.filter(|p| p.is_shared()) {
            Some(p) => Access {
                expect: sys::Expect {
                    owner: None,
                    shared_write: true,
                    shared: Some(p),
                },
            },
            None => Access::owner_only(),
        }
    }
}
