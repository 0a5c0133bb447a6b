'use strict'
// Loads the compiled addon. Throws when it was not built (no compiler at install time, or not
// Linux): callers treat that as "not available" and serve bodies the ordinary way.

const addon = require('./build/Release/sendfile.node')

module.exports = {
  /**
   * Sends bytes [offset, offset + length) of the open file `fileFd` to the non-blocking TCP
   * socket `socketFd`: with sendfile(2), or, when `copy` (a sixth argument) is true, with
   * pread(2) and send(2) through one buffer the event loop's transfers share. Calls back once:
   * callback(errno, sent, shortFile) with errno 0 when everything was sent. Throws (err.errno
   * set) when it cannot start. Returns a handle for cancel() and sent().
   */
  start: addon.start,
  /** Stops a transfer; its callback is then never called. */
  cancel: addon.cancel,
  /** Bytes sent so far. */
  sent: addon.sent,
}
