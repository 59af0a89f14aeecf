/** Where a command writes its user-facing output (the CLI passes process.stdout; tests capture it). */
export interface Io {
  stdout(s: string): void;
}
