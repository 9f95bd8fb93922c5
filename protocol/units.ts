// Units for people: byte counts in 1024-based units, written the same way by the relay, the CLI and the inspector.

/** Bytes in a human unit: 512 B, 12.1 KiB, 3.0 MiB, 1.2 GiB. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit]}`;
}
