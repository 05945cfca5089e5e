//! FreeSWITCH Event Socket: frames, codec, inbound client, outbound session.
