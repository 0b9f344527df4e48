//! mailplane's public gRPC API, package `mailplane.v1`.
//!
//! The `.proto` files live in `proto/mailplane/v1/`. The build compiles them with `protox`, a
//! protobuf compiler written in Rust, so a normal build needs no `protoc` on the machine.

/// Package `mailplane.v1`: the SMTP account and credential services and their messages.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("mailplane.v1");
}

/// The encoded `FileDescriptorSet` of the API, served by gRPC reflection so that any client
/// (grpcurl, Postman, other languages) can discover and call the API without our code.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("mailplane_descriptor");

/// A `google.protobuf.Timestamp` for a time in microseconds since the Unix epoch (the unit of
/// every stored time); its `Display` is RFC 3339.
pub fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    }
}

/// The time of a `google.protobuf.Timestamp` in microseconds since the Unix epoch, or `None`
/// when it is out of range.
pub fn micros(ts: &prost_types::Timestamp) -> Option<i64> {
    ts.seconds
        .checked_mul(1_000_000)
        .and_then(|s| s.checked_add(i64::from(ts.nanos) / 1000))
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_of_micros() {
        let t = super::timestamp(-1);
        assert_eq!((t.seconds, t.nanos), (-1, 999_999_000));
        assert_eq!(
            super::timestamp(1_500_000).to_string(),
            "1970-01-01T00:00:01.500Z"
        );
    }
}
