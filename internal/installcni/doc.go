// Package installcni installs Coil's CNI plugins and network configuration list on a
// node: what the install-cni init container of coild's DaemonSet runs (cmd/install-cni).
//
// Every file is written atomically: to a temporary file in the destination directory,
// synced, then renamed over the destination, and the directory synced, so a runtime
// never execs a half-copied plugin nor reads a half-written conflist, and a plugin that
// is running keeps its old inode. The plugins are installed before the conflist, so the
// conflist never names a plugin that is not there yet. A file already equal to what would
// be written (content and mode) is left alone: running it again changes nothing and
// makes the runtime reload nothing. Other files in the directories are never touched,
// except this package's own temporary files left by a crash (".NAME.coil-tmp-*").
//
// Everything is checked before anything is written: the directories exist and are
// directories, the plugins to copy exist, the conflist is a conflist whose plugins will
// all be present. A failure leaves the destination as it was.
package installcni
