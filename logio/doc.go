// Package logio moves Coil's event log in and out of etcd and checks it: export to a
// JSON Lines file, verify (the live log or files), import into an empty etcd, snapshot
// streams and archive the events before a snapshot to a file.
//
// The file format (version 1) is one JSON object per line: a header
//
//	{"coilLogExport":1,"kind":"export","prefix":"/coil/","revision":R,"created":"...",
//	 "streams":{"node/n1":{"first":1,"last":17,"lastHash":"...","snapshot":12},...}}
//
// then the events of every stream listed, stream by stream (in stream-name order), each
// in its JSON form (events.Event MarshalJSON, with "hash"). An archive has "kind":"archive"
// and "before" (the cut); its ranges end just before a snapshot that stays in etcd, so the
// archive and the live log verify as one chain.
//
// ReadArchives reads several archive files (in any order) as one chain per stream for
// readers of the whole history (coilctl history --archive); Archives.Join checks that the
// live log continues them.
//
// Every operation streams: memory stays flat whatever the log's length (one stream's
// read chunk, one batch of lines). Everything read from etcd is read at one revision.
//
// Errors: a log or file that does not verify returns an error matching ErrBroken whose
// message starts "chain broken at STREAM #SEQ: "; a file that is not an export,
// ErrFormat; an import into an etcd that holds a log, ErrNotEmpty.
package logio
