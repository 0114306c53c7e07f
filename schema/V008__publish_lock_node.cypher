// The one PublishLock node exists from the start: publish transactions lock it exclusively and read
// transactions (queries.read_transaction) lock it shared, so a read runs wholly before or wholly after
// any publish, the first publish into a new catalog included.
MERGE (lock:PublishLock {id: 'catalog'});
