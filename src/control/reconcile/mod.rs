//! Converging what runs onto what is wanted, one worker per service
//! ([`worker`]): gather what every node runs ([`gather`]), decide ([`decide`]:
//! the pure [`plan`] and the pure [`schedule`]r), execute ([`execute`]);
//! with the rollout's judgement ([`progress`], [`rollout`]), the health
//! checks ([`health`]) and the nodes' events ([`events`]).

pub(crate) mod decide;
pub(crate) mod events;
pub(crate) mod execute;
pub(crate) mod gather;
pub(crate) mod health;
pub(crate) mod placer;
pub mod plan;
pub(crate) mod progress;
pub(crate) mod rollout;
pub mod schedule;
pub(crate) mod standing;
pub(crate) mod worker;
