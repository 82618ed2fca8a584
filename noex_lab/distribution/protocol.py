"""Message types spoken on a node-to-node connection after the handshake.

A frame body holds one or more messages (see framing.py); every message is a msgpack
array whose first element is one of these types.
"""

from __future__ import annotations

PROTOCOL_VERSION = 4  # 2: a frame holds one or more messages; 3: the dialer proves first, scrypt key;
#                       4: every remote operation is named `namespace.op` (docs/reference/distribution.md)

CALL = 1        # [CALL, req, pid, creation, sender, msg]
REPLY = 2       # [REPLY, req, ok, value]  (value: result, or an error tuple when not ok)
CAST = 3        # [CAST, pid, creation, msg]
SEND = 4        # [SEND, pid, creation, msg]                      -> handle_info
STOP = 5        # [STOP, req, pid, creation, reason, timeout]
EXIT = 6        # [EXIT, pid, creation, from_ref, reason]          link exit signal
LINK = 7        # [LINK, pid, creation, from_ref]
UNLINK = 8      # [UNLINK, pid, creation, from_ref]
MONITOR = 9     # [MONITOR, mref, pid, creation]
DEMONITOR = 10  # [DEMONITOR, mref, pid, creation]
DOWN = 11       # [DOWN, mref, ref, reason]                        to the watcher's node
GOSSIP = 12     # [GOSSIP, [[node_id, incarnation], ...]]
GOODBYE = 13    # [GOODBYE]                                        graceful leave
RPC = 14        # [RPC, req, op, args]                             system request -> REPLY
CHUNK = 15      # [CHUNK, message_id, last, data]                  part of a large body
RPC_CAST = 16   # [RPC_CAST, op, args]                             system notification, no reply

KNOWN_TYPES = frozenset(range(1, 17))

# Error kinds inside a failed REPLY: [kind, *details]
ERR_NOPROC = "noproc"          # [kind, reason]
ERR_CRASH = "crash"            # [kind, exc_type, message, traceback, [behavior, process] (optional)]
ERR_TIMEOUT = "timeout"        # [kind, seconds]
ERR_EXCEPTION = "exception"    # [kind, error_class_name, args]   a typed NoexError raised by a handler

# Remote operations (RPC / RPC_CAST ops) the router itself sends; each is served by a service
# (service.py): (name, node) targets by multi.NamedService, a process's shutdown by node_ops.NodeService.
OP_NODE_SHUTDOWN = "node.shutdown"  # RPC [pid, creation, reason, timeout] -> the exit reason
OP_NAMED_CALL = "named.call"        # RPC [name, timeout, sender, msg] -> the reply
OP_NAMED_SEND = "named.send"        # RPC_CAST [name, tag, msg]         (tag: cast or info)
OP_NAMED_WHEREIS = "named.whereis"  # RPC name -> ProcessRef | None
