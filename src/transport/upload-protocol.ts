// The wire of a resumable, durable upload of one file (a replication log, up to GBs): the
// headers and the acknowledgement both halves speak (upload-client.ts sends, upload-server.ts
// receives). Protocol (in the spirit of tus / IETF resumable uploads):
//   HEAD <url>  -> 200, Upload-Offset: bytes the server holds durably, Upload-Complete: 1|0
//   PUT  <url>  Upload-Offset, Upload-Length, body = the bytes from that offset
//               (the last chunk also carries Upload-Checksum: sha256=<hex> of the whole file)
//            -> 204 + Upload-Offset after the bytes are fsynced, or, when the file is complete,
//               200 {complete, size, sha256} only after `onComplete` resolved: that is the ack.
//   PUT  <url>  Upload-Offset: 0, Upload-Defer-Length: 1, body = the whole file as the sender
//               produces it (a streamed log: its length is known only at its end). It replaces
//               any partial upload; the request's end completes it (no checksum header: the
//               sha256 is taken as it arrives, and `onComplete` verifies the content). A torn one
//               keeps its fsynced bytes, which an ordinary PUT can then resume from.

export const UPLOAD_OFFSET = 'upload-offset';
export const UPLOAD_LENGTH = 'upload-length';
export const UPLOAD_COMPLETE = 'upload-complete';
export const UPLOAD_CHECKSUM = 'upload-checksum';
export const UPLOAD_DEFER_LENGTH = 'upload-defer-length';

/** The acknowledgement of a complete upload (PUT 200 body; kept in `<name>.complete`). */
export interface UploadCompletion {
  readonly complete: true;
  readonly size: number;
  readonly sha256: string;
}
