//! One conversation per room, several rooms at once. The token endpoint (and the gRPC
//! `Dispatch`) send the agent to a room; it leaves when the user does.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Result;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    conversation::{Conversation, Shared, Status},
    transport::{AgentOutput, TransportEvent},
};

/// A room the agent is in.
pub struct JoinedRoom {
    pub output: Arc<dyn AgentOutput>,
    pub events: mpsc::Receiver<TransportEvent>,
    /// Leave the room (disconnect); called once the conversation is over.
    pub leave: Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>,
}

/// How the agent gets into a room: LiveKit in the binary, in-memory in tests.
pub trait RoomJoiner: Send + Sync + 'static {
    fn join(&self, room: &str) -> BoxFuture<'_, Result<JoinedRoom>>;
}

pub struct Dispatcher {
    shared: Shared,
    joiner: Arc<dyn RoomJoiner>,
    rooms: Mutex<HashMap<String, Arc<Status>>>,
    max_rooms: usize,
    shutdown: CancellationToken,
}

#[derive(Debug, PartialEq)]
pub enum Dispatched {
    Joined,
    AlreadyThere,
}

impl Dispatcher {
    pub fn new(shared: Shared, joiner: Arc<dyn RoomJoiner>, max_rooms: usize, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(Self { shared, joiner, rooms: Mutex::default(), max_rooms, shutdown })
    }

    pub fn conversations(&self) -> Vec<Arc<Status>> {
        self.rooms.lock().unwrap().values().cloned().collect()
    }

    /// Make sure the agent is in `room`. Err when the agent is at `max_rooms`.
    pub fn dispatch(self: &Arc<Self>, room: &str) -> Result<Dispatched, usize> {
        let mut rooms = self.rooms.lock().unwrap();
        if rooms.contains_key(room) {
            return Ok(Dispatched::AlreadyThere);
        }
        if rooms.len() >= self.max_rooms {
            return Err(self.max_rooms);
        }
        let status = Status::new(room);
        rooms.insert(room.to_string(), status.clone());
        self.shared.metrics.conversations.set(rooms.len() as f64);
        drop(rooms);
        let me = self.clone();
        let room = room.to_string();
        tokio::spawn(async move {
            if let Err(e) = me.clone().converse(&room, status).await {
                tracing::warn!(room = %room, error = %format!("{e:#}"), "conversation ended with an error");
            }
            let mut rooms = me.rooms.lock().unwrap();
            rooms.remove(&room);
            me.shared.metrics.conversations.set(rooms.len() as f64);
        });
        Ok(Dispatched::Joined)
    }

    async fn converse(self: Arc<Self>, room: &str, status: Arc<Status>) -> Result<()> {
        // The user's client may still be connecting when we are asked: retry the join briefly.
        let mut delay = Duration::from_millis(250);
        let joined = loop {
            match self.joiner.join(room).await {
                Ok(j) => break j,
                Err(e) if delay < Duration::from_secs(4) && !self.shutdown.is_cancelled() => {
                    tracing::warn!(room, error = %format!("{e:#}"), "could not join the room yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => return Err(e),
            }
        };
        tracing::info!(room, "agent joined the room");
        let conversation = Conversation::new(self.shared.clone(), joined.output, status);
        let result = conversation.run(joined.events, self.shutdown.child_token()).await;
        (joined.leave)().await;
        tracing::info!(room, "agent left the room");
        result
    }
}
