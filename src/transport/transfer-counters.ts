// Bytes moved by a client, so tests and the bench can assert what was shipped (a resumed upload
// must not resend what the server already acknowledged).

/** Body bytes sent and received and requests made; HTTP headers and TLS framing are not counted. */
export class TransferCounters {
  requests = 0;
  bytesSent = 0;
  bytesReceived = 0;

  reset(): void {
    this.requests = 0;
    this.bytesSent = 0;
    this.bytesReceived = 0;
  }

  snapshot(): { requests: number; bytesSent: number; bytesReceived: number } {
    return { requests: this.requests, bytesSent: this.bytesSent, bytesReceived: this.bytesReceived };
  }
}
