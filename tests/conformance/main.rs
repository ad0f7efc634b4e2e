//! The conformance suite: the lock-queue contract of DESIGN.md, written once
//! ([`contract`] through the gRPC API and the service layer, [`engine`] at
//! the engine's interface) and run on every backend, in this process:
//!
//! - `memory::NAME`: the embedded engine in memory;
//! - `durable::NAME`: the embedded engine on its redb store in a temp dir;
//! - `forwarded::NAME`: a follower's forwarding engine to a primary, each
//!   behind its own gRPC server, over `tokio::io::duplex` pipes;
//! - `etcd::NAME`: two etcd gateways over a real etcd, through the follower.
//!
//! Each test talks to the service through the generated Rust gRPC client,
//! so the service layer and the gRPC surface are under test on every
//! backend. The first three run on tokio's paused clock: ttls, timeouts and
//! lock-delays pass as virtual time, in microseconds, and deadlines are
//! exact. etcd's leases need real time, so `etcd::` runs in real time with
//! the same bodies (whose ttls are short for that reason).
//! `cargo test --test conformance etcd::` runs one backend.
//!
//! What needs a real process (the wire: curl, grpcurl, browsers, TLS,
//! kill -9, restarts) stays in the process suites.

#[path = "../common/mod.rs"]
mod common;
mod contract;
mod engine;
mod fixture;

/// Stamps each test once per backend.
macro_rules! conformance {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    crate::$module::$name(crate::fixture::Backend::Memory).await
                }
            )*
        }
        mod durable {
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    crate::$module::$name(crate::fixture::Backend::Durable).await
                }
            )*
        }
        mod forwarded {
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    crate::$module::$name(crate::fixture::Backend::Forwarded).await
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::$name(crate::fixture::Backend::Etcd).await
                }
            )*
        }
    };
}

conformance!(
    contract::fifty_waiters_are_granted_in_fifo_order_one_at_a_time,
    contract::disconnecting_a_queued_stream_removes_its_entry,
    contract::timeout_zero_and_timeout_n,
    contract::ttl_expiry_hands_the_lock_on,
    contract::releasing_a_queued_entry_fails_its_waiters,
    contract::renew_by_index_and_by_value,
    contract::renew_with_another_ttl_moves_a_deadline_or_the_ttl_on_acquire,
    contract::same_value_joins_and_holder_reacquire_renews,
    contract::a_released_holder_hears_it_ended,
    contract::election_campaign_observe_resign,
    contract::recampaigning_renews_and_same_name_candidates_win_together,
    contract::watch_and_list_see_every_key_under_a_prefix,
    contract::watch_reports_every_kind_of_change,
    contract::indexes_increase_across_keys,
    contract::unknown_entries_are_not_found_and_touch_nothing,
    contract::a_semaphore_holds_up_to_its_limit_and_hands_over_in_order,
    contract::a_lock_delay_follows_an_expiry_and_never_a_release,
    contract::check_says_whether_a_fencing_token_is_current,
    engine::a_hold_expires_at_its_deadline,
    engine::abandoned_requests_leave_nothing_behind,
);
