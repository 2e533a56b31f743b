//! gRPC `voice.agent.v1.Agent`: dispatch to a room, list conversations.

use std::sync::{Arc, OnceLock};

use tonic::{Request, Response, Status};
use voice_proto::agent::v1::{
    agent_server::Agent, Conversation, DispatchRequest, DispatchResponse, ListConversationsRequest, ListConversationsResponse,
};

use crate::{dispatch::Dispatcher, token::valid_name};

pub struct AgentGrpc {
    pub dispatcher: Arc<OnceLock<Arc<Dispatcher>>>,
}

impl AgentGrpc {
    fn dispatcher(&self) -> Result<&Arc<Dispatcher>, Status> {
        self.dispatcher.get().ok_or_else(|| Status::unavailable("the agent is still loading"))
    }
}

#[tonic::async_trait]
impl Agent for AgentGrpc {
    async fn dispatch(&self, req: Request<DispatchRequest>) -> Result<Response<DispatchResponse>, Status> {
        let room = req.into_inner().room;
        if !valid_name(&room) {
            return Err(Status::invalid_argument("`room` must be 1-64 characters of letters, digits, '-', '_' or '.'"));
        }
        match self.dispatcher()?.dispatch(&room) {
            Ok(d) => Ok(Response::new(DispatchResponse { room, joined: d == crate::dispatch::Dispatched::Joined })),
            Err(max) => Err(Status::resource_exhausted(format!("the agent is already in {max} rooms"))),
        }
    }

    async fn list_conversations(&self, _: Request<ListConversationsRequest>) -> Result<Response<ListConversationsResponse>, Status> {
        let conversations = self
            .dispatcher
            .get()
            .map(|d| d.conversations())
            .unwrap_or_default()
            .iter()
            .map(|c| Conversation {
                room: c.room.clone(),
                state: c.state.lock().unwrap().to_string(),
                turns: c.turns.load(std::sync::atomic::Ordering::Relaxed) as u64,
                age_seconds: c.started.elapsed().as_secs_f64(),
            })
            .collect();
        Ok(Response::new(ListConversationsResponse { conversations }))
    }
}
