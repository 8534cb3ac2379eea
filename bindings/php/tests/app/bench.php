<?php
// The benchmark's page (bench.sh): one session read, incremented and written per request,
// with the handler named by ?h=: gardenstate (this binding), files (PHP's default), redis
// (phpredis, locking on), none (no session: the cost of PHP and nginx alone).
declare(strict_types=1);

$h = $_GET['h'] ?? 'gardenstate';
if ($h === 'none') {
    echo "0\n";
    return;
}
if ($h === 'gardenstate') {
    require getenv('GDS_PHP_AUTOLOAD');
    session_set_save_handler(new Gardenstate\SessionHandler(getenv('GDS_PHP_SEGMENT')), true);
} elseif ($h === 'redis') {
    ini_set('session.save_handler', 'redis');
    ini_set('session.save_path', getenv('GDS_PHP_REDIS'));
} elseif ($h !== 'files') {
    http_response_code(404);
    return;
}
session_start();
$_SESSION['count'] = ($_SESSION['count'] ?? 0) + 1;
$_SESSION['user'] = ['name' => 'visitor', 'roles' => ['reader'], 'cart' => range(1, 20)];
session_write_close();
echo $_SESSION['count'], "\n";
