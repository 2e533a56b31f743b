//! gRPC contracts of the stack, generated from `proto/` at build time.

pub mod stt {
    pub mod v1 {
        tonic::include_proto!("voice.stt.v1");
    }
}

pub mod llm {
    pub mod v1 {
        tonic::include_proto!("voice.llm.v1");
    }
}

pub mod embed {
    pub mod v1 {
        tonic::include_proto!("voice.embed.v1");
    }
}

pub mod tts {
    pub mod v1 {
        tonic::include_proto!("voice.tts.v1");
    }
}

pub mod agent {
    pub mod v1 {
        tonic::include_proto!("voice.agent.v1");
    }
}
