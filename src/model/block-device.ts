// The port every disk is served through: the NBD export, the tracker and the hypervisor drivers
// all speak it, so the VM's writes reach change tracking whatever carries them.

export interface BlockDevice {
  /** Size in bytes; a multiple of 512. */
  readonly size: number;
  read(offset: number, length: number): Promise<Buffer>;
  write(offset: number, data: Buffer): Promise<void>;
  /** Writes zeroes; also used for TRIM, since a trimmed range must read back as zeroes here. */
  writeZeroes(offset: number, length: number): Promise<void>;
  /** Resolves once every acknowledged write is durable. */
  flush(): Promise<void>;
}
