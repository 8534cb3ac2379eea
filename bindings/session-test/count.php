<?php
// The PHP side of bindings/session-test.sh: one counter in the shared session. The pool sets
// session.name = gds_session and session.use_strict_mode = 1 (SESSION-FORMAT.md, sections 1-2).
declare(strict_types=1);

require getenv('GDS_PHP_AUTOLOAD');

session_set_save_handler(new Gardenstate\SessionHandler(getenv('GDS_SEGMENT')), true);
session_start();
$_SESSION['n'] = ($_SESSION['n'] ?? 0) + 1;
header('Content-Type: text/plain');
echo $_SESSION['n'], " php\n";
