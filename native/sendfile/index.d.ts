export interface Transfer {
  readonly __transfer: unique symbol
}
export function start(socketFd: number, fileFd: number, offset: number, length: number, callback: (errno: number, sent: number, shortFile: boolean) => void): Transfer
export function cancel(transfer: Transfer): void
export function sent(transfer: Transfer): number
