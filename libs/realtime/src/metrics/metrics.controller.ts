import { Controller, Get, Header } from '@nestjs/common';
import { ApiOperation, ApiTags } from '@nestjs/swagger';
import { Authenticated } from '../auth/authenticated.decorator';
import { MetricsService } from './metrics.service';

/** `GET /metrics`, Prometheus text, for users who may `read` `metrics` (admins). */
@ApiTags('metrics')
@Controller('metrics')
export class MetricsController {
  constructor(private readonly metrics: MetricsService) {}

  @Get()
  @Authenticated({ permission: ['read', 'metrics'] })
  @Header('Cache-Control', 'no-store')
  @Header('Content-Type', 'text/plain; version=0.0.4; charset=utf-8')
  @ApiOperation({ summary: 'Prometheus metrics (needs read on metrics)' })
  async scrape(): Promise<string> {
    return this.metrics.registry.metrics();
  }
}
