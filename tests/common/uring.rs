//! Whether a test's io_uring variant can run here. Tests that run on both transports (`epoll`,
//! `uring`) ask [`skipped`] first: where the kernel refuses io_uring the `uring` variant says so
//! on stderr and skips, except under `CI`, where a refused io_uring fails the run rather than
//! skip it. The `epoll` variant always runs. [`both_transports!`](crate::both_transports) makes
//! the two variants of a scenario.

use metalcu::net::IoMode;

/// Whether the `mode` variant cannot run here: io_uring refused outside CI (said on stderr).
/// Under `CI` a refused io_uring fails the test.
pub fn skipped(mode: IoMode) -> bool {
    if mode != IoMode::Uring {
        return false;
    }
    match metalcu::net::uring_available() {
        Ok(()) => false,
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: the io_uring transport cannot run here ({why}); the epoll variant still runs");
            true
        }
        Err(why) => panic!("CI: the io_uring transport cannot run here: {why}"),
    }
}

/// `both_transports!(name, body)` runs `body(IoMode)` (an async fn in the calling module) as
/// the tests `name::epoll` and `name::uring`.
#[macro_export]
macro_rules! both_transports {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn epoll() {
                super::$body(metalcu::net::IoMode::Epoll).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn uring() {
                super::$body(metalcu::net::IoMode::Uring).await
            }
        }
    };
}
