'use strict'
// Loads the compiled addon. Throws when it was not built (no compiler at install time, or not
// Linux): callers treat that as "not available" and serve bodies the ordinary way.

const addon = require('./build/Release/sendfile.node')

module.exports = {
  /**
   * Sends bytes [offset, offset + length) of the open file `fileFd` to the non-blocking TCP
   * socket `socketFd`. Calls back once: callback(errno, sent, shortFile) with errno 0 when
   * everything was sent. Throws (err.errno set) when it cannot start. Returns a handle for
   * cancel() and sent().
   */
  start: addon.start,
  /** Stops a transfer; its callback is then never called. */
  cancel: addon.cancel,
  /** Bytes sent so far. */
  sent: addon.sent,
}
